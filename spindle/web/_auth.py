"""The one authentication layer: an ASGI middleware in front of a whole app.

The admin server wraps its whole app in it (DBOS admin routes, the dashboard under
``/dbos`` and any route added later), and ``create_app(..., admin_token=...)`` wraps a
dashboard mounted in a user's own app. It

- lets a request through with ``Authorization: Bearer <token>`` or the login cookie;
- serves the login form (``GET <prefix>/login``), checks it (``POST``: the token travels in
  the body, never in a URL) and sets an ``HttpOnly``, ``SameSite=Strict`` cookie holding a
  keyed hash of the token, not the token; ``POST <prefix>/logout`` clears it;
- serves the stylesheet the login page needs without the token;
- refuses state-changing requests (anything but GET/HEAD/OPTIONS) sent cross-site
  (``Sec-Fetch-Site``, else ``Origin``), with or without a token: a page on another site
  cannot make a logged-in browser, or a loopback server with no token, cancel a workflow;
- answers 401 as a small HTML page with the login form (JSON for JSON clients).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import Headers
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "spindle_admin_token"
HERE = Path(__file__).parent
CSS = HERE / "static" / "dashboard.css"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: A login form is one short field: anything bigger is not one.
MAX_LOGIN_BODY = 8 * 1024
#: Default cap on any request body the wrapped app is sent (the admin API reads 1 MiB at most).
MAX_BODY_BYTES = 1024 * 1024

_ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte from timing."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def session_value(token: str) -> str:
    """The cookie's value: a keyed hash of the token, so the browser's cookie store (and
    anything that reads it) never holds the bearer token itself."""
    return hmac.new(token.encode("utf-8"), b"spindle-admin-session", hashlib.sha256).hexdigest()


def route_path(scope: Scope) -> str:
    """The request path relative to where the app is mounted."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def bearer_token(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def cookie_value(headers: Headers, name: str = COOKIE) -> str | None:
    """The login cookie's value (None when absent or the cookie header is malformed)."""
    raw = headers.get("cookie")
    if not raw:
        return None
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(raw)
    except CookieError:
        return None
    morsel = cookie.get(name)
    return morsel.value if morsel is not None else None


def authenticated(headers: Headers, token: str, cookie: str = COOKIE) -> bool:
    """True when the request carries the token (header) or the login cookie."""
    if token_matches(bearer_token(headers), token):
        return True
    return token_matches(cookie_value(headers, cookie), session_value(token))


def cross_site(headers: Headers) -> bool:
    """True when a browser says the request comes from another site.

    ``Sec-Fetch-Site`` is set by the browser and cannot be forged by a page; older browsers
    send only ``Origin``, compared with ``Host``. Non-browser clients (curl, the DBOS CLI)
    send neither and are not affected.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":
        return True
    host = headers.get("host", "")
    try:
        return urlsplit(origin).netloc.lower() != host.lower()
    except ValueError:
        return True


#: Names a client on this machine uses for a server bound to loopback.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def host_name(headers: Headers) -> str | None:
    """The ``Host`` header's name, without port and brackets, lowercased."""
    try:
        return urlsplit("//" + headers.get("host", "")).hostname
    except ValueError:
        return None


class AdminAuth:
    """Token check, login, logout and cross-site refusal in front of ``app``.

    ``prefix`` is where the login lives, relative to the app's mount point ("" for a
    dashboard mounted at /dbos, "/dbos" for the admin server). ``public`` paths pass without
    the token (the admin server's health probe); ``unsafe_gets`` are GET routes that change
    state (DBOS's ``GET /deactivate``), refused cross-site like a POST (an ``<img>`` on any
    page could call them otherwise). With ``token=None`` only the cross-site and size checks
    apply. ``hosts``: the only names accepted in the ``Host`` header (None: any); a server
    on loopback takes only loopback names, so a page whose DNS name is rebound to 127.0.0.1
    (same-origin to the browser) still cannot reach it.

    ``key_in_path``: a regular expression with a ``key`` group; a websocket whose path
    matches it must present the token as that path segment (the conductor's
    ``/websocket/<app>/<key>``: DBOS apps send their ``conductor_key`` there, no header).
    ``cookie``, ``service`` and ``token_name`` name the cookie, the server on the login
    page and the setting the token comes from, so two servers on one host keep apart;
    ``cookie_path`` widens the cookie beyond ``prefix`` (the fleet's ``/dbos/fleet.json``
    is a sibling of ``/dbos/fleet``, not under it).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        prefix: str = "",
        public: Iterable[str] = (),
        unsafe_gets: Iterable[str] = (),
        home: str | None = "/threads",
        max_body_bytes: int = MAX_BODY_BYTES,
        hosts: Iterable[str] | None = None,
        key_in_path: str | None = None,
        cookie: str = COOKIE,
        cookie_path: str | None = None,
        service: str = "admin",
        token_name: str = "admin_token",
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError(f"{token_name} must be a non-empty string or None")
        self.app = app
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.public = frozenset(public)
        self.unsafe_gets = frozenset(unsafe_gets)
        self.home = home
        self.max_body_bytes = max_body_bytes
        self.hosts = frozenset(hosts) if hosts is not None else None
        self.key_in_path = re.compile(key_in_path) if key_in_path is not None else None
        self.cookie = cookie
        self.cookie_path = cookie_path
        self.service = service
        self.token_name = token_name
        self.login_path = f"{self.prefix}/login"
        self.logout_path = f"{self.prefix}/logout"
        self.css_path = f"{self.prefix}/static/dashboard.css"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = await self._gate(scope, receive)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    async def _gate(self, scope: Scope, receive: Receive) -> Response | None:
        """The response that ends the request here, or None to pass it on."""
        headers = Headers(scope=scope)
        path = route_path(scope)
        method: str = scope["method"]
        if path == self.css_path and method in ("GET", "HEAD"):
            # The login page must look like the rest, and a stylesheet holds no secret.
            return FileResponse(CSS, media_type="text/css")
        changes_state = method not in SAFE_METHODS or path in self.unsafe_gets
        if self.token is not None:
            # The token comes first: without it every route answers 401, whatever else is
            # wrong with the request, so an anonymous client learns nothing about the API.
            at_login = path in (self.login_path, self.logout_path)
            if at_login and changes_state and cross_site(headers):
                return self._error(scope, 403, "cross-site request refused")
            if path == self.login_path:
                return await self._login_route(scope, receive, method)
            if path == self.logout_path and method == "POST":
                response = RedirectResponse(self._url(scope, self.login_path), status_code=303)
                response.delete_cookie(self.cookie, path=self._cookie_path(scope))
                return response
            if path not in self.public and not authenticated(headers, self.token, self.cookie):
                return self._unauthorized(scope, headers, path)
        if self.hosts is not None and host_name(headers) not in self.hosts:
            host = headers.get("host", "")
            return self._error(scope, 400, f"Host {host!r} is not a name of this server")
        if changes_state and cross_site(headers):
            return self._error(scope, 403, "cross-site request refused")
        if "\x00" in path:
            return self._error(scope, 400, "the path contains a NUL character")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return self._error(scope, 413, f"the body is larger than {self.max_body_bytes} bytes")
        return None

    async def _login_route(self, scope: Scope, receive: Receive, method: str) -> Response:
        if method == "POST":
            return await self._login(scope, receive)
        if method in ("GET", "HEAD"):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return self._page(scope, 200, nxt=_local_next(scope, query), message=None)
        return self._error(scope, 405, "the login takes GET (the form) or POST")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A websocket route served here later is behind the same token; browsers send the
        # cookie and Origin on the upgrade, so the cross-site rule holds too.
        headers = Headers(scope=scope)
        wrong_host = self.hosts is not None and host_name(headers) not in self.hosts
        refused = wrong_host or cross_site(headers) or not self._websocket_allowed(scope, headers)
        if refused:
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)

    def _websocket_allowed(self, scope: Scope, headers: Headers) -> bool:
        if self.token is None:
            return True
        path = route_path(scope)
        if path in self.public:
            return True
        match = self.key_in_path.fullmatch(path) if self.key_in_path is not None else None
        if match is not None:
            # The key in the path is this route's credential: a wrong key is refused even
            # from a browser holding the login cookie (it names the app's key, not a person).
            return token_matches(match.group("key"), self.token)
        return authenticated(headers, self.token, self.cookie)

    async def _login(self, scope: Scope, receive: Receive) -> Response:
        assert self.token is not None
        body = await _read_body(receive, MAX_LOGIN_BODY)
        if body is None:
            return self._error(scope, 413, "the login form is too large")
        try:
            form = parse_qs(body.decode("utf-8"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return self._page(scope, 400, nxt=None, message="the form could not be read")
        given = form.get("token", [None])[0]
        nxt = _local_next(scope, form)
        if not token_matches(given, self.token):
            return self._page(scope, 401, nxt=nxt, message="wrong token")
        target = nxt or (
            self._url(scope, f"{self.prefix}{self.home}") if self.home is not None else None
        )
        response: Response
        if target is None:
            response = self._page(scope, 200, nxt=None, message="logged in", ok=True)
        else:
            response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            self.cookie,
            session_value(self.token),
            httponly=True,
            samesite="strict",
            path=self._cookie_path(scope),
            secure=scope.get("scheme") == "https",
        )
        return response

    def _unauthorized(self, scope: Scope, headers: Headers, path: str) -> Response:
        message = f"{self.service} token required: send 'Authorization: Bearer <token>' or log in"
        realm = "spindle" if self.service == "admin" else f"spindle-{self.service}"
        auth = {"WWW-Authenticate": f'Bearer realm="{realm}"'}
        if _wants_json(headers, path, self.prefix):
            login = self._url(scope, self.login_path)
            body = {"error": message, "status": 401, "login": login}
            return JSONResponse(body, status_code=401, headers=auth)
        nxt = str(scope.get("root_path", "")) + path
        if scope.get("query_string"):
            nxt += "?" + scope["query_string"].decode("latin-1")
        response = self._page(scope, 401, nxt=nxt, message=message, required=True)
        response.headers.update(auth)
        return response

    def _page(
        self,
        scope: Scope,
        status: int,
        *,
        nxt: str | None,
        message: str | None,
        ok: bool = False,
        required: bool = False,
    ) -> HTMLResponse:
        html = _ENV.get_template("login.html").render(
            css=self._url(scope, self.css_path),
            action=self._url(scope, self.login_path),
            next=nxt,
            message=message,
            ok=ok,
            required=required,
            service=self.service,
            token_name=self.token_name,
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def _error(self, scope: Scope, status: int, message: str) -> Response:
        headers = Headers(scope=scope)
        if _wants_json(headers, route_path(scope), self.prefix):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        return HTMLResponse(
            _ENV.get_template("auth_error.html").render(
                status=status, message=message, css=self._url(scope, self.css_path)
            ),
            status_code=status,
        )

    def _url(self, scope: Scope, path: str) -> str:
        return str(scope.get("root_path", "")).rstrip("/") + path

    def _cookie_path(self, scope: Scope) -> str:
        if self.cookie_path is not None:
            return self._url(scope, self.cookie_path) or "/"
        return self._url(scope, self.prefix) or "/"


def _wants_json(headers: Headers, path: str, prefix: str) -> bool:
    """JSON for .json paths, JSON clients, and API routes outside the browser pages."""
    accept = headers.get("accept", "")
    if path.endswith(".json") or "json" in accept:
        return True
    in_pages = path == prefix or path.startswith(prefix + "/")
    return not in_pages and "text/html" not in accept


def _local_next(scope: Scope, form: dict[str, list[str]]) -> str | None:
    """Where to go after logging in: a path on this app only (never another host)."""
    values = form.get("next")
    if not values:
        return None
    nxt = values[0]
    root = str(scope.get("root_path", ""))
    if (
        not nxt.startswith("/")
        or nxt.startswith("//")
        or "\\" in nxt
        or any(ord(c) < 0x20 for c in nxt)
        or not nxt.startswith(root)
    ):
        return None
    return nxt


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: dict[str, Any] = dict(await receive())
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
