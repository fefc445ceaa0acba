"""Optional admin token: every route but ``/login`` needs a bearer header or the cookie."""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "spindle_admin_token"

#: Paths (relative to the mount) reachable without the token: the login form sets it.
PUBLIC_PATHS = frozenset({"/login"})


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte from timing."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def route_path(scope: Scope) -> str:
    """The request path relative to where the dashboard is mounted."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def request_token(headers: Headers) -> str | None:
    """The token a request carries: ``Authorization: Bearer`` first, then the cookie."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    raw = headers.get("cookie")
    if raw:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(raw)
        except CookieError:
            return None
        morsel = cookie.get(COOKIE)
        if morsel is not None:
            return morsel.value
    return None


class TokenAuthMiddleware:
    """Answers 401 to any request without the right token (HTML or JSON by path)."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        if not token:
            raise ValueError("admin_token must be a non-empty string when given")
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if token_matches(request_token(Headers(scope=scope)), self.token):
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        headers = {"WWW-Authenticate": 'Bearer realm="spindle"'}
        message = "admin token required: send 'Authorization: Bearer <token>' or log in at login"
        wants_json = "json" in Headers(scope=scope).get("accept", "")
        if path.endswith(".json") or wants_json:
            response: PlainTextResponse | JSONResponse = JSONResponse(
                {"error": message, "status": 401}, status_code=401, headers=headers
            )
        else:
            root = scope.get("root_path", "")
            response = PlainTextResponse(
                f"401 Unauthorized: {message} ({root}/login)", status_code=401, headers=headers
            )
        await response(scope, receive, send)
