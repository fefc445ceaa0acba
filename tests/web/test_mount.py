"""The dashboard mounted under /dbos in a plain Starlette app, as the runtime mounts it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from spindle.diagnostics import ThreadKind
from spindle.web import create_app

from .conftest import Runtime


@pytest.mark.usefixtures("with_htmx")
def test_mounted_at_dbos_serves_every_route_with_prefixed_links(runtime: Runtime) -> None:
    """``/dbos/threads`` works and every link and asset on it stays under ``/dbos``."""
    dashboard = create_app(runtime.session)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The parent forwards the dashboard's lifespan so its listener is removed at exit.
        async with dashboard.router.lifespan_context(dashboard):
            yield

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("app")

    parent = Starlette(
        routes=[Route("/", hello), Mount("/dbos", dashboard)],
        lifespan=lifespan,
    )
    rid = runtime.threads["dbos-queue-manager"].record.record_id
    listeners = len(runtime.registry._listeners)
    with TestClient(parent) as c:
        assert c.get("/").text == "app"
        html = c.get("/dbos/threads").text
        assert 'href="/dbos/static/dashboard.css"' in html
        assert 'src="/dbos/static/htmx.min.js"' in html
        assert f'href="/dbos/threads/{rid}"' in html
        assert 'hx-get="/dbos/threads/fragment"' in html
        paths = ["/dbos/threads.json", "/dbos/shutdown", "/dbos/history"]
        paths += ["/dbos/static/dashboard.css", f"/dbos/threads/{rid}", f"/dbos/threads/{rid}.json"]
        for path in paths:
            assert c.get(path).status_code == 200, path
        home = c.get("/dbos/", follow_redirects=False)
        assert home.headers["location"] == "/dbos/threads"
        assert c.get("/dbos/threads/nope").status_code == 404
        assert len(runtime.registry._listeners) == listeners + 2
    assert len(runtime.registry._listeners) == listeners


def test_mounted_with_token_login_cookie_is_scoped_to_the_mount(runtime: Runtime) -> None:
    """The login cookie's path is the mount point, the form posts under it and the
    redirect stays under it; the user's own routes are not behind the dashboard's token."""

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("app")

    dashboard = create_app(runtime.session, admin_token="t")
    parent = Starlette(routes=[Route("/", hello), Mount("/dbos", dashboard)])
    with TestClient(parent) as c:
        assert c.get("/").text == "app"
        denied = c.get("/dbos/threads", headers={"Accept": "text/html"})
        assert denied.status_code == 401
        assert 'action="/dbos/login"' in denied.text
        assert 'href="/dbos/static/dashboard.css"' in denied.text
        assert c.get("/dbos/static/dashboard.css").status_code == 200
        r = c.post("/dbos/login", data={"token": "t"}, follow_redirects=False)
        assert r.headers["location"] == "/dbos/threads"
        assert "Path=/dbos" in r.headers["set-cookie"]
        assert c.get("/dbos/threads").status_code == 200


def test_mounted_without_lifespan_starts_listeners_on_first_request(runtime: Runtime) -> None:
    """Mounted as the runtime mounts it (no lifespan forwarded), history still fills."""
    dashboard = create_app(runtime.session)
    parent = Starlette(routes=[Mount("/dbos", dashboard)])
    listeners = len(runtime.registry._listeners)
    try:
        with TestClient(parent) as c:
            assert len(runtime.registry._listeners) == listeners
            assert c.get("/dbos/history.json").status_code == 200
            assert len(runtime.registry._listeners) == listeners + 2
            runtime.spawn(ThreadKind.POLLER, "dbos-cron[late]")
            names = {t["name"] for t in c.get("/dbos/history.json").json()["threads"]}
            assert "dbos-cron[late]" in names
    finally:
        dashboard.state.dashboard.stop()
    assert len(runtime.registry._listeners) == listeners
