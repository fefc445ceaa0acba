"""Spindle as the conductor: the websocket apps connect to, and the fleet page.

``create_conductor_app(token=...)`` is an ASGI app: ``/websocket/{app}/{key}`` is where
DBOS and Spindle apps connect (their ``conductor_url`` is this server's ``ws://`` URL and
their ``conductor_key`` the token), ``/dbos/fleet`` lists every executor with its threads,
recent workflows and last shutdown, and sends cancel/resume/fork over the protocol.
Behind the admin server's authentication layer (:class:`AdminAuth`): apps present the
token as their key, people as a bearer header or the cookie the login form sets. The
page works without JavaScript; htmx refreshes it every two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._auth import AdminAuth
from ._fleet import Executor, Fleet, RequestFailed
from ._views import ENV, STATIC, htmx_available

FLEET = "/dbos/fleet"
COOKIE = "spindle_conductor_token"
ACTIONS = ("cancel", "resume", "fork")
MAX_ID = 256


def _page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.update(base=FLEET, has_htmx=htmx_available(), when=_when, ago=_ago)
    return HTMLResponse(ENV.get_template(template).render(context), status_code=status)


def _when(wall: float | None) -> str:
    if wall is None:
        return "—"
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(wall: float | None) -> str:
    if wall is None:
        return "—"
    return f"{max(0.0, time.time() - wall):.0f}s ago"


MAX_FORM_BYTES = 8192


async def _form(request: Request) -> dict[str, str] | None:
    """A urlencoded form's fields (first value each); None when too big or not urlencoded.

    Parsed here rather than with ``request.form()``, which needs python-multipart for a form
    this small and this simple.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in ("", "application/x-www-form-urlencoded"):
        return None
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return None
    try:
        pairs = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in pairs.items()}


def create_conductor_app(
    *, token: str | None = None, fleet: Fleet | None = None, poll_interval: float = 2.0
) -> Starlette:
    """The conductor server: the apps' websocket and the fleet page (see module docs)."""
    if token is not None and not token:
        raise ValueError("token must be a non-empty string or None")
    fleet = fleet or Fleet(poll_interval=poll_interval)
    watchers: set[asyncio.Task[None]] = set()

    async def websocket(ws: WebSocket) -> None:
        # The key in the path was checked by the auth layer (key_in_path) before this runs.
        await ws.accept()
        ex = fleet.connect(ws.path_params["app"], ws)
        task = asyncio.create_task(_watch(ex))
        watchers.add(task)
        code: int | None = None
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    code = message.get("code")
                    break
                # The protocol is text frames; a binary one is decoded rather than fatal.
                data = message.get("text")
                if data is None and message.get("bytes") is not None:
                    data = message["bytes"].decode("utf-8", "replace")
                if data is not None:
                    fleet.on_frame(ex, data)
        except WebSocketDisconnect as exc:
            code = exc.code
        finally:
            fleet.disconnected(ex, code)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            watchers.discard(task)

    async def _watch(ex: Executor) -> None:
        try:
            await fleet.watch(ex)
        except RequestFailed:
            pass  # it left or refused; the page shows what is known

    async def page(request: Request) -> Response:
        return _page(
            "fleet.html",
            executors=fleet.executors(),
            flash=request.query_params.get("msg", "")[:500],
            flash_error=request.query_params.get("error") == "1",
        )

    async def fragment(_: Request) -> Response:
        return _page("_fleet_body.html", executors=fleet.executors())

    async def as_json(_: Request) -> Response:
        return JSONResponse({"executors": [e.to_dict() for e in fleet.executors()]})

    async def action(request: Request) -> Response:
        wants_json = "json" in request.headers.get("accept", "")
        ex = fleet.get(request.path_params["session_id"])
        if ex is None:
            return _answer(wants_json, 404, "no such executor")
        form = await _form(request)
        if form is None:
            return _answer(wants_json, 400, "the body must be a small urlencoded form")
        name = str(form.get("action", ""))
        wf_id = str(form.get("workflow_id", "")).strip()
        if name not in ACTIONS:
            return _answer(wants_json, 400, f"action must be one of {', '.join(ACTIONS)}")
        if not wf_id or len(wf_id) > MAX_ID:
            return _answer(wants_json, 400, f"workflow_id must be 1 to {MAX_ID} characters")
        if not ex.connected:
            return _answer(wants_json, 409, f"{ex.app} is not connected")
        try:
            if name == "fork":
                raw_step = str(form.get("start_step", "1") or "1")
                if not raw_step.isdigit() or int(raw_step) < 1:
                    return _answer(wants_json, 400, "start_step must be an integer >= 1")
                reply = await fleet.request(
                    ex, "fork_workflow", body={"workflow_id": wf_id, "start_step": int(raw_step)}
                )
                done = f"forked {wf_id} as {reply.get('new_workflow_id')}"
            else:
                await fleet.request(ex, name, workflow_id=wf_id)
                done = f"{name} {wf_id}: done"
        except RequestFailed as exc:
            return _answer(wants_json, 502, f"{name} {wf_id} failed: {exc}")
        # The page shows the new state at once rather than at the next poll.
        with contextlib.suppress(RequestFailed):
            await fleet.poll_once(ex)
        return _answer(wants_json, 200, done)

    def _answer(wants_json: bool, status: int, message: str) -> Response:
        # JSON for API callers. A form gets the page: after success by redirect (a reload
        # does not post again), after an error at once, with the 4xx/5xx status.
        if wants_json:
            key = "result" if status < 400 else "error"
            return JSONResponse({key: message, "status": status}, status_code=status)
        if status < 400:
            return RedirectResponse(f"{FLEET}?msg={quote(message)}", status_code=303)
        executors = fleet.executors()
        return _page("fleet.html", status, executors=executors, flash=message, flash_error=True)

    async def home(_: Request) -> Response:
        return RedirectResponse(FLEET, status_code=303)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        for task in list(watchers):
            task.cancel()

    app = Starlette(
        routes=[
            Route("/", home),
            WebSocketRoute("/websocket/{app}/{key}", websocket),
            Route(FLEET, page),
            Route(f"{FLEET}.json", as_json),
            Route(f"{FLEET}/fragment", fragment),
            Route(f"{FLEET}/executors/{{session_id}}/actions", action, methods=["POST"]),
            Mount(f"{FLEET}/static", StaticFiles(directory=STATIC)),
        ],
        lifespan=lifespan,
    )
    app.state.fleet = fleet
    # The one authentication layer the admin server uses: bearer or login cookie for people,
    # the key in the websocket path for apps; it also refuses cross-site posts (the cookie
    # alone is not consent) and serves the login form at /dbos/fleet/login.
    app.add_middleware(
        AdminAuth,
        token=token,
        prefix=FLEET,
        home="",
        key_in_path=r"/websocket/[^/]+/(?P<key>[^/]+)",
        cookie=COOKIE,
        cookie_path="/",
        service="conductor",
        token_name="--token",
    )
    return app
