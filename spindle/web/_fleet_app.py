"""Spindle as the conductor: the websocket apps connect to, and the fleet page.

``create_conductor_app(token=...)`` is an ASGI app: ``/websocket/{app}/{key}`` is where
DBOS and Spindle apps connect (their ``conductor_url`` is this server's ``ws://`` URL and
their ``conductor_key`` the token), ``/dbos/fleet`` lists every executor with its threads,
recent workflows and last shutdown, and sends cancel/resume/fork over the protocol.
Behind a token like the admin server: apps present it as their key, people as a bearer
header or the cookie the login form sets. The page works without JavaScript; htmx
refreshes it every two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hmac
import time
from collections.abc import AsyncIterator
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._fleet import Executor, Fleet, RequestFailed
from ._views import ENV, STATIC, htmx_available

FLEET = "/dbos/fleet"
COOKIE = "spindle_conductor_token"
#: Reachable without the token: the login form, and the stylesheet it uses.
PUBLIC = (f"{FLEET}/login", f"{FLEET}/static/")
ACTIONS = ("cancel", "resume", "fork")
MAX_ID = 256


def _matches(given: str | None, token: str) -> bool:
    # Constant time: the token cannot be guessed byte by byte from response times.
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "replace"), token.encode("utf-8")
    )


def _request_token(headers: Headers) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel is not None else None


class FleetAuth:
    """401 for any HTTP request without the token (the websocket checks its key itself)."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            self.token is None
            or scope["type"] != "http"
            or path.startswith(PUBLIC)
            or _matches(_request_token(Headers(scope=scope)), self.token)
        ):
            await self.app(scope, receive, send)
            return
        message = "conductor token required: send 'Authorization: Bearer <token>' or log in"
        headers = {"WWW-Authenticate": 'Bearer realm="spindle-conductor"'}
        if path.endswith(".json") or "json" in Headers(scope=scope).get("accept", ""):
            response: Response = JSONResponse(
                {"error": message, "status": 401}, status_code=401, headers=headers
            )
        else:
            response = _page("fleet_login.html", 401, error=None, note=message)
            response.headers.update(headers)
        await response(scope, receive, send)


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


def _same_origin(request: Request) -> bool:
    """A form post from another site is refused (the cookie alone is not consent)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


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
        if token is not None and not _matches(ws.path_params["key"], token):
            await ws.close(code=1008, reason="bad conductor key")
            return
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
        if not _same_origin(request):
            return _answer(wants_json, 403, "cross-origin form posts are refused")
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

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return _page("fleet_login.html", error=None, note=None)
        form = await _form(request) or {}
        given = str(form.get("token", ""))
        if token is not None and not _matches(given, token):
            return _page("fleet_login.html", 401, error="wrong token", note=None)
        response = RedirectResponse(FLEET, status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/")
        return response

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
            Route(f"{FLEET}/login", login, methods=["GET", "POST"]),
            Route(f"{FLEET}/executors/{{session_id}}/actions", action, methods=["POST"]),
            Mount(f"{FLEET}/static", StaticFiles(directory=STATIC)),
        ],
        lifespan=lifespan,
    )
    app.state.fleet = fleet
    app.add_middleware(FleetAuth, token=token)
    return app
