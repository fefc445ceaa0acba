"""Hypothesis fuzzes every admin route through the real server, with and without the token.

Per backend: EXAMPLES requests without credentials (or with wrong ones) must all be 401
except the public health probe and the login's own pages; EXAMPLES more with the token must
never be a 5xx; a workflow running the whole time is untouched and finishes with its result.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spindle import DBOS
from spindle.runtime._admin_input import InputError, parse_json
from tests.conftest import MakeDBOS

TOKEN = "fuzz-token"
#: Per phase and backend; SPINDLE_ADMIN_FUZZ_EXAMPLES raises it for an on-demand long run.
EXAMPLES = int(os.environ.get("SPINDLE_ADMIN_FUZZ_EXAMPLES", "250"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

TEMPLATES = [
    ("GET", "/dbos-healthz"),
    ("GET", "/deactivate"),
    ("GET", "/dbos-workflow-queues-metadata"),
    ("POST", "/dbos-workflow-recovery"),
    ("POST", "/workflows"),
    ("POST", "/queues"),
    ("POST", "/dbos-garbage-collect"),
    ("POST", "/dbos-global-timeout"),
    ("GET", "/workflows/{}"),
    ("GET", "/workflows/{}/steps"),
    ("POST", "/workflows/{}/cancel"),
    ("POST", "/workflows/{}/resume"),
    ("POST", "/workflows/{}/restart"),
    ("POST", "/workflows/{}/fork"),
    ("GET", "/dbos/threads"),
    ("GET", "/dbos/threads.json"),
    ("GET", "/dbos/threads/{}"),
    ("POST", "/dbos/threads/{}/pyspy.json"),
    ("GET", "/dbos/shutdown.json"),
    ("GET", "/dbos/login"),
    ("POST", "/dbos/login"),
    ("GET", "/{}"),
]
#: Reachable without the token by design (the probe, the login and its stylesheet).
PUBLIC = {"/dbos-healthz", "/dbos/login", "/dbos/logout", "/dbos/static/dashboard.css"}
FIELDS = [
    "limit", "offset", "status", "workflow_uuids", "workflow_name", "start_time", "end_time",
    "sort_desc", "queue_name", "cutoff_epoch_timestamp_ms", "rows_threshold", "start_step",
    "new_workflow_id", "application_version", "token", "x",
]  # fmt: skip

_release = threading.Event()
_started = threading.Event()


@DBOS.step()
def fuzz_held_step() -> str:
    _started.set()
    _release.wait(600.0)  # the test releases it (finally)
    return "held"


@DBOS.workflow()
def fuzz_held(tag: str) -> str:
    return fuzz_held_step() + tag


@DBOS.step()
def fuzz_step(x: int) -> int:
    return x + 1


@DBOS.workflow()
def fuzz_done(x: int) -> int:
    return fuzz_step(x) * 2


@dataclass(frozen=True)
class Req:
    """One generated request."""

    method: str
    path: str
    segment: str
    body: bytes | None
    headers: dict[str, str]


hostile_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "2024-01-01T00:00:00", "SUCCESS", "local"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=8)), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def bodies(draw: st.DrawFn, segments: list[str]) -> bytes | None:
    """No body, a JSON object of known and unknown fields, a list, or broken bytes."""
    choice = draw(st.integers(0, 6))
    if choice == 0:
        return None
    if choice == 6:
        # A fork onto an ID that exists (409) or not, from a valid or invalid step.
        fork = {
            "new_workflow_id": draw(st.sampled_from(segments)),
            "start_step": draw(st.integers(-1, 3)),
        }
        return json.dumps(fork).encode()
    if choice <= 2:
        keys = st.sampled_from(FIELDS) | st.text(max_size=6)
        doc = draw(st.dictionaries(keys, hostile_value, max_size=4))
        return json.dumps(doc).encode()
    if choice == 3:
        return json.dumps(draw(st.lists(hostile_value, max_size=4))).encode()
    if choice == 4:
        depth = draw(st.sampled_from([31, 33, 100, 5000]))
        return b"[" * depth + b"]" * draw(st.sampled_from([0, depth]))
    return draw(st.binary(max_size=64))


def requests(segments: list[str], *, with_token: bool) -> st.SearchStrategy[Req]:
    """Any route and method, hostile IDs, bodies and headers."""

    @st.composite
    def build(draw: st.DrawFn) -> Req:
        method, template = draw(st.sampled_from(TEMPLATES))
        # Mostly the route's own method (the handlers are the target), sometimes any other.
        method = draw(st.sampled_from([method] * 15 + ["GET", "POST", "PUT", "DELETE", "HEAD"]))
        segment = draw(
            st.sampled_from(segments)
            | st.text(max_size=12)
            | st.sampled_from(["\x00", "x" * 2000, "..", "%", "1", "999999"])
        )
        path = template.format(quote(segment, safe="")) if "{}" in template else template
        headers: dict[str, str] = {"content-type": "application/json"}
        if with_token:
            headers["authorization"] = f"Bearer {TOKEN}"
        else:
            wrong = draw(st.sampled_from(["", "bearer", "cookie", "basic"]))
            if wrong == "bearer":
                headers["authorization"] = "Bearer " + draw(st.sampled_from(["x", TOKEN + "x"]))
            elif wrong == "cookie":
                headers["cookie"] = f"spindle_admin_token={draw(st.sampled_from([TOKEN, 'a']))}"
            elif wrong == "basic":
                headers["authorization"] = "Basic Zm9vOmJhcg=="
        if draw(st.booleans()):
            headers["accept"] = draw(st.sampled_from(["application/json", "text/html", "*/*"]))
        return Req(method, path, segment, draw(bodies(segments)), headers)

    return build()


@pytest.fixture
def fuzzed_app(make_dbos: MakeDBOS) -> Iterator[httpx.Client]:
    make_dbos(
        run_admin_server=True, admin_port=0, enable_diagnostics=True, admin_token=TOKEN
    ).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def harmless_to(sentinel: str, sentinel_created_ms: int, req: Req) -> bool:
    """With the token some requests legitimately change the sentinel workflow (cancel it,
    time it out, recover it): those are not generated, every other one is."""
    if req.segment == sentinel:
        return False
    if req.path == "/dbos-global-timeout" and req.method == "POST":
        try:
            cutoff = (parse_json(req.body or b"") or {}).get("cutoff_epoch_timestamp_ms")
        except (InputError, AttributeError):
            return True  # refused as a bad body
        if cutoff is None or (isinstance(cutoff, int) and cutoff > sentinel_created_ms):
            return False
    return not (req.path == "/dbos-workflow-recovery" and b"local" in (req.body or b""))


@pytest.mark.slow
def test_fuzz_every_admin_route_with_and_without_the_token(fuzzed_app: httpx.Client) -> None:
    """No 5xx; without the token every non-public route is 401; the app's workflows run on."""
    _release.clear()
    _started.clear()
    sentinel = DBOS.start_workflow(fuzz_held, "!")
    assert _started.wait(10.0)
    done = DBOS.start_workflow(fuzz_done, 1)
    assert done.get_result() == 4
    sentinel_status = DBOS.get_workflow_status(sentinel.workflow_id)
    assert sentinel_status is not None
    created = int(sentinel_status.created_at)
    segments = [sentinel.workflow_id, done.workflow_id, "nope", ""]
    before = sorted(w.workflow_id for w in DBOS.list_workflows())
    anon: Counter[int] = Counter()
    authed: Counter[int] = Counter()
    common = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )

    def send(req: Req) -> httpx.Response:
        return fuzzed_app.request(req.method, req.path, content=req.body, headers=req.headers)

    @common
    @given(req=requests(segments, with_token=False))
    def without_token(req: Req) -> None:
        r = send(req)
        anon[r.status_code] += 1
        assert r.status_code < 500, (req, r.status_code, r.text[:300])
        if req.path not in PUBLIC:
            assert r.status_code == 401, (req, r.status_code, r.text[:300])
        assert "Traceback" not in r.text

    @common
    @given(req=requests(segments, with_token=True))
    def with_token(req: Req) -> None:
        assume(harmless_to(sentinel.workflow_id, created, req))
        r = send(req)
        authed[r.status_code] += 1
        assert r.status_code < 500, (req, r.status_code, r.text[:300])
        assert "Traceback" not in r.text

    try:
        without_token()
        # Nothing changed without the token: no workflow created, cancelled or deleted.
        assert sorted(w.workflow_id for w in DBOS.list_workflows()) == before
        with_token()
        status = DBOS.get_workflow_status(sentinel.workflow_id)
        assert status is not None
        assert status.status == "PENDING"
    finally:
        _release.set()
    assert sentinel.get_result() == "held!"
    assert DBOS.start_workflow(fuzz_done, 5).get_result() == 12
    assert sum(anon.values()) == EXAMPLES
    assert sum(authed.values()) == EXAMPLES
    assert not [s for s in (anon | authed) if s >= 500]
    # The fuzz reached real handlers, not only the auth layer and the validators.
    assert authed[200] > 0
    assert authed[400] > 0
    assert authed[404] > 0
    ARTIFACTS.mkdir(exist_ok=True)
    backend = "sqlite" if DBOS.runtime.sysdb.url.startswith("sqlite") else "postgres"
    figures = {
        "without_token": dict(sorted(anon.items())),
        "with_token": dict(sorted(authed.items())),
    }
    (ARTIFACTS / f"admin-fuzz-{backend}.json").write_text(json.dumps(figures, indent=1))
