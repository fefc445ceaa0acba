"""``create_app``: the dashboard as a Starlette app the runtime (or anyone) can mount."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spindle.diagnostics import DiagnosticsSession

from . import _api, _views
from ._auth import AdminAuth, route_path
from ._dashboard import Dashboard
from ._source import DashboardSource, as_source


def create_app(
    source: DashboardSource | DiagnosticsSession,
    *,
    admin_token: str | None = None,
    allow_pyspy: bool = True,
) -> Starlette:
    """The thread dashboard over ``source``; mount it, e.g. ``app.mount("/dbos", ...)``.

    A parent app should run this app's lifespan (it removes the registry listener on
    shutdown); without it the listener is installed on first request and stays.
    """
    return build_app(as_source(source), admin_token=admin_token, allow_pyspy=allow_pyspy)


def build_app(
    source: DashboardSource,
    *,
    admin_token: str | None = None,
    allow_pyspy: bool = True,
    home: str = "threads",
    sample_every_sec: float = 1.0,
) -> Starlette:
    """:func:`create_app` with the home page chosen (the offline viewer's is ``shutdown``)."""
    if admin_token is not None and not admin_token:
        raise ValueError("admin_token must be a non-empty string or None")
    # stuck_grace_sec is optional on a source: a session has one, a bare source gets 5 s.
    grace = float(getattr(source, "stuck_grace_sec", 5.0))
    dash = Dashboard(source, allow_pyspy=allow_pyspy, lint_grace_sec=grace)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dash.start()
        # Samples thread states for the history on the server's own loop (no thread of
        # its own), only while the dashboard serves: diagnostics off costs nothing.
        sampler = asyncio.ensure_future(_sample_forever(dash, sample_every_sec))
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            dash.stop()

    routes = [
        Route("/", _views.home, name="home"),
        Route("/threads", _views.threads_page, name="threads"),
        Route("/threads.json", _api.threads_json, name="threads_json"),
        Route("/threads/fragment", _views.threads_fragment, name="threads_fragment"),
        # The .json routes come first: "{id}" would otherwise swallow "7.json".
        Route("/threads/{id}.json", _api.thread_json, name="thread_json"),
        Route(
            "/threads/{id}/pyspy.json",
            _api.thread_pyspy_json,
            methods=["POST"],
            name="thread_pyspy_json",
        ),
        Route("/threads/{id}/pyspy", _views.thread_pyspy, methods=["POST"], name="thread_pyspy"),
        Route("/threads/{id}", _views.thread_page, name="thread"),
        Route("/history", _views.history_page, name="history"),
        Route("/history.json", _api.history_json, name="history_json"),
        Route("/shutdown", _views.shutdown_page, name="shutdown"),
        Route("/shutdown.json", _api.shutdown_json, name="shutdown_json"),
        Route("/rules", _views.rules_page, name="rules"),
        Route("/lints.json", _api.lints_json, name="lints_json"),
        Mount("/static", StaticFiles(directory=_views.STATIC), name="static"),
    ]
    middleware = [Middleware(ServerTiming)]
    if admin_token:
        # Mounted in a user's app, the dashboard guards itself; the admin server passes no
        # token here because its own AdminAuth already wraps everything it serves.
        middleware.append(Middleware(AdminAuth, token=admin_token, prefix="", home=f"/{home}"))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    app.state.admin_token = admin_token
    app.state.home = home
    return app


#: The sampler may use at most this share of the server's loop: with thousands of threads
#: a sample costs milliseconds, and pages must not wait behind it.
SAMPLER_LOOP_SHARE = 0.05


async def _sample_forever(dash: Dashboard, every: float) -> None:
    while True:
        start = time.perf_counter()
        dash.sample_history()
        spent = time.perf_counter() - start
        await asyncio.sleep(max(every, spent / SAMPLER_LOOP_SHARE))


class ServerTiming:
    """Adds ``Server-Timing: app;dur=<ms>`` (time to the response head) to every response.

    Browser devtools show it, and the benchmark reads it: it is the server's own time,
    without the client's.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                headers = MutableHeaders(scope=message)
                headers.append("Server-Timing", f"app;dur={ms:.2f}")
            await send(message)

        await self.app(scope, receive, timed_send)


async def _http_error(request: Request, exc: Exception) -> Response:
    # 400/404/405 come out as JSON on .json paths and as a small page elsewhere.
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if route_path(request.scope).endswith(".json") or "json" in request.headers.get("accept", ""):
        body = {"error": exc.detail, "status": exc.status_code}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)
    if exc.status_code == 304:
        return Response(status_code=304, headers=headers)
    response = _views.render(
        request, "error.html", status=exc.status_code, code=exc.status_code, detail=exc.detail
    )
    response.headers.update(headers)
    return response
