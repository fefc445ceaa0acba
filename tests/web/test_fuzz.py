"""Hypothesis fuzzes every route: 1,000 requests in all, and not one 5xx."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from spindle.web import create_app

from .conftest import Runtime, record_shutdown

TEMPLATES = [
    "/",
    "/login",
    "/threads",
    "/threads.json",
    "/threads/fragment",
    "/threads/{}",
    "/threads/{}.json",
    "/threads/{}/pyspy",
    "/threads/{}/pyspy.json",
    "/history",
    "/history.json",
    "/shutdown",
    "/shutdown.json",
    "/lints.json",
    "/static/{}",
    "/{}",
]
KEYS = ["kind", "state", "offset", "limit", "id", "token", "x"]
EXAMPLES_PER_APP = 500  # two apps: 1,000 requests


@dataclass(frozen=True)
class Req:
    """One generated request."""

    method: str
    path: str
    query: str
    headers: dict[str, str]


segment = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["", ".", "..", "1", "2", "3", "dashboard.css", "htmx.min.js", "%zz"]),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
)
value = st.one_of(
    st.sampled_from(["queue", "running", "poller", "exited-ok", "", "QUEUE", ",", "queue,bad"]),
    st.sampled_from(["0", "1", "2", "200", "10000", "10001", "-1", "1e3", "٣"]),
    st.text(max_size=40),
)


@st.composite
def requests(draw: st.DrawFn) -> Req:
    """A request to any route, with hostile path segments, query values and headers."""
    template = draw(st.sampled_from(TEMPLATES))
    path = template.format(draw(segment)) if "{}" in template else template
    key = st.sampled_from(KEYS) | st.text(max_size=8)
    pairs = draw(st.lists(st.tuples(key, value), max_size=4))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["authorization"] = "Bearer " + draw(st.sampled_from(["tok", "", "x" * 300]))
    if draw(st.booleans()):
        cookie = draw(st.sampled_from(['"', "a;b", "=", "tok", "\\"]))
        headers["cookie"] = f"spindle_admin_token={cookie}"
    if draw(st.booleans()):
        headers["accept"] = draw(st.sampled_from(["application/json", "text/html", "*/*"]))
    if draw(st.booleans()):
        headers["hx-request"] = "true"
    method = draw(st.sampled_from(["GET", "GET", "POST", "HEAD", "PUT", "DELETE"]))
    return Req(method, path, urlencode(pairs), headers)


def fuzz(client: TestClient, statuses: Counter[int]) -> None:
    """Send EXAMPLES_PER_APP generated requests and count the statuses."""

    @settings(
        max_examples=EXAMPLES_PER_APP,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(req=requests())
    def run(req: Req) -> None:
        url = req.path + (f"?{req.query}" if req.query else "")
        r = client.request(req.method, url, headers=req.headers, follow_redirects=False)
        statuses[r.status_code] += 1
        assert r.status_code < 500, (req, r.status_code, r.text[:500])

    run()


def test_fuzz_every_route_never_answers_5xx(runtime: Runtime) -> None:
    """1,000 requests over an open app and a token-protected one: no 5xx."""
    record_shutdown(runtime, fault=True)
    statuses: Counter[int] = Counter()
    # py-spy off: a fuzzed valid id would pause the process for a real dump each time; the
    # py-spy route is still fuzzed (ids, methods, headers) and answers its reason.
    for app in (
        create_app(runtime.session, allow_pyspy=False),
        create_app(runtime.session, allow_pyspy=False, admin_token="tok"),
    ):
        with TestClient(app, raise_server_exceptions=False) as client:
            fuzz(client, statuses)
    assert sum(statuses.values()) == 2 * EXAMPLES_PER_APP
    assert not [s for s in statuses if s >= 500], statuses
    # The fuzz reached real pages, not only errors.
    assert statuses[200] > 0
    assert statuses[404] > 0
