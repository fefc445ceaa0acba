"""The admin server's one auth layer: every route it serves needs ``admin_token``."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import Mount, Route

from spindle import DBOS
from spindle.runtime._admin_api import build_admin_app
from tests.conftest import MakeDBOS

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_release = threading.Event()
_started = threading.Event()


@DBOS.step()
def held_step() -> str:
    _started.set()
    _release.wait(30.0)
    return "done"


@DBOS.workflow()
def held_workflow() -> str:
    return held_step()


def served_routes(dashboard: bool) -> list[tuple[str, str]]:
    """(method, path) of every route the admin app serves, read from the app itself, so a
    route added later (metrics, fleet, ...) is checked here without editing this test."""
    rt = DBOS.runtime
    from spindle.web import create_app

    app = build_admin_app(rt, create_app(rt.diag) if dashboard and rt.diag else None)
    out: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, Route):
            out += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
        elif isinstance(route, Mount):
            for sub in route.routes:
                if isinstance(sub, Route):
                    out += [(m, route.path + sub.path) for m in sorted(sub.methods or ())]
                elif isinstance(sub, Mount):
                    out.append(("GET", f"{route.path}{sub.path}/dashboard.css"))
    return out


@pytest.fixture
def secured(make_dbos: MakeDBOS) -> Iterator[httpx.Client]:
    """A launched app whose admin server has a token and the dashboard."""
    make_dbos(
        run_admin_server=True, admin_port=0, enable_diagnostics=True, admin_token=TOKEN
    ).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


def test_every_served_route_needs_the_token(secured: httpx.Client) -> None:
    """Without the token (or with a wrong one) every DBOS admin route and every dashboard
    page is 401 and changes nothing; only the health probe and the login's own pages pass."""
    _release.clear()
    _started.clear()
    handle = DBOS.start_workflow(held_workflow)
    assert _started.wait(10.0)
    wf = handle.workflow_id
    routes = served_routes(dashboard=True)
    assert len(routes) >= 14 + 10
    open_paths = {"/dbos-healthz", "/dbos/static/dashboard.css"}
    try:
        for method, template in routes:
            path = template.replace("{workflow_id}", wf).replace("{id}", "1")
            for headers in (
                {},
                {"Authorization": "Bearer nope"},
                {"Cookie": "spindle_admin_token=x"},
            ):
                r = secured.request(method, path, headers=headers, json={})
                if template in open_paths:
                    assert r.status_code == 200, (method, path)
                else:
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    assert r.headers["www-authenticate"].startswith("Bearer")
        # Nothing happened: the cancel, fork, restart, timeout and GC above were all refused.
        assert DBOS.get_workflow_status(wf).status == "PENDING"  # type: ignore[union-attr]
        assert [w.workflow_id for w in DBOS.list_workflows()] == [wf]
    finally:
        _release.set()
    assert handle.get_result() == "done"


def test_the_token_opens_every_route(secured: httpx.Client) -> None:
    """With the bearer token the DBOS admin routes answer as before."""
    assert held_workflow.__name__ == "held_workflow"
    _release.set()
    handle = DBOS.start_workflow(held_workflow)
    assert handle.get_result() == "done"
    wf = handle.workflow_id
    assert secured.get(f"/workflows/{wf}", headers=AUTH).json()["Status"] == "SUCCESS"
    assert len(secured.get(f"/workflows/{wf}/steps", headers=AUTH).json()) == 1
    listed = secured.post("/workflows", json={}, headers=AUTH).json()
    assert [w["WorkflowUUID"] for w in listed] == [wf]
    assert secured.get("/dbos/threads.json", headers=AUTH).status_code == 200
    assert secured.get("/dbos/threads", headers=AUTH).status_code == 200


def test_401_is_json_for_the_api_and_a_page_for_browsers(secured: httpx.Client) -> None:
    """API clients get JSON naming the login; a browser gets the login form at /dbos/login."""
    api = secured.post("/workflows", json={})
    assert api.status_code == 401
    assert api.json()["login"] == "/dbos/login"
    page = secured.get("/dbos/threads", headers={"Accept": "text/html"})
    assert page.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/dbos/login">' in page.text


def test_login_cookie_opens_the_dashboard_only(secured: httpx.Client) -> None:
    """POST /dbos/login sets a cookie scoped to /dbos: the browser sends it to the dashboard,
    never to the DBOS admin API (which takes the bearer header)."""
    r = secured.post("/dbos/login", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/dbos/threads"
    cookie = r.headers["set-cookie"]
    assert "Path=/dbos" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert secured.get("/dbos/threads").status_code == 200
    assert secured.post("/workflows", json={}).status_code == 401


@pytest.mark.parametrize("public", [True, False])
def test_healthz_is_public_only_when_configured(make_dbos: MakeDBOS, public: bool) -> None:
    """``admin_healthz_public`` (default True) keeps the load-balancer probe open."""
    make_dbos(
        run_admin_server=True, admin_port=0, admin_token=TOKEN, admin_healthz_public=public
    ).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/dbos-healthz").status_code == (200 if public else 401)
        assert c.get("/dbos-healthz", headers=AUTH).status_code == 200
        # Without the dashboard the login still exists, for the admin API's browser users.
        assert c.get("/dbos/login").status_code == 200
        assert c.get("/dbos/static/dashboard.css").status_code == 200


def test_cross_site_requests_are_refused_even_without_a_token(make_dbos: MakeDBOS) -> None:
    """A page on another site cannot drive the loopback admin server: cross-site POSTs and
    the state-changing ``GET /deactivate`` are 403; curl-like clients are unaffected."""
    make_dbos(run_admin_server=True, admin_port=0).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    _release.set()
    wf = DBOS.start_workflow(held_workflow).workflow_id
    with httpx.Client(base_url=url, timeout=10) as c:
        evil = {"Origin": "https://evil.example"}
        assert c.post(f"/workflows/{wf}/restart", headers=evil).status_code == 403
        assert c.post("/dbos-global-timeout", headers={"Sec-Fetch-Site": "cross-site"}).json() == {
            "error": "cross-site request refused",
            "status": 403,
        }
        assert c.get("/deactivate", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert c.get("/dbos-healthz", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
        assert len(DBOS.list_workflows()) == 1
        assert c.post(f"/workflows/{wf}/restart").status_code == 200
        assert c.post(f"/workflows/{wf}/restart", headers={"Origin": url}).status_code == 200
        # DNS rebinding: a page at evil.example whose name now resolves to 127.0.0.1 is
        # same-origin to the browser, but its Host header names it, and is refused.
        port = url.rsplit(":", 1)[1]
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        r = c.post(f"/workflows/{wf}/cancel", headers=rebound)
        assert r.status_code == 400
        assert "evil.example" in r.json()["error"]
        assert c.get("/workflows/" + wf, headers={"Host": "evil.example"}).status_code == 400
        assert c.get(f"/workflows/{wf}", headers={"Host": f"localhost:{port}"}).status_code == 200
        assert DBOS.get_workflow_status(wf).status == "SUCCESS"  # type: ignore[union-attr]


def test_after_phase_5_a_request_without_the_token_is_still_401(make_dbos: MakeDBOS) -> None:
    """During a hung shutdown, once phase 5 closed the management routes (503), the auth
    layer still answers first: no token is 401 on every route, the token gets the 503."""
    make_dbos(
        run_admin_server=True,
        admin_port=0,
        enable_diagnostics=True,
        admin_token=TOKEN,
        admin_healthz_public=False,
        thread_join_timeout_sec=30.0,
    ).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    _release.clear()
    _started.clear()
    wf = DBOS.start_workflow(held_workflow).workflow_id
    assert _started.wait(10.0)
    destroyer = threading.Thread(target=DBOS.destroy, name="test-destroyer")
    destroyer.start()
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            # Each poll is a request (no sleep): wait until the management gate is closed.
            closed = False
            for _ in range(5000):
                if c.get("/dbos-healthz", headers=AUTH).status_code == 503:
                    closed = True
                    break
            assert closed, "the management routes never closed"
            for method, path in (
                ("GET", "/dbos-healthz"),
                ("POST", "/workflows"),
                ("POST", f"/workflows/{wf}/cancel"),
                ("GET", f"/workflows/{wf}"),
                ("GET", "/dbos/threads.json"),
                ("GET", "/dbos/shutdown.json"),
            ):
                for headers in ({}, {"Authorization": "Bearer nope"}):
                    r = c.request(method, path, headers=headers, json={})
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    assert r.headers["www-authenticate"].startswith("Bearer")
            # With the token: management is closed (503), the dashboard still answers.
            assert c.post("/workflows", json={}, headers=AUTH).status_code == 503
            assert c.get("/dbos/shutdown.json", headers=AUTH).status_code == 200
    finally:
        _release.set()
        destroyer.join(30)
    assert not destroyer.is_alive()
