"""The optional admin token: bearer header or cookie, a login form, 401 otherwise."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from spindle.web import create_app
from spindle.web._auth import session_value

from .conftest import Runtime

ROUTES = ["/", "/threads", "/threads.json", "/threads/fragment", "/shutdown", "/shutdown.json",
          "/history", "/history.json", "/lints.json"]  # fmt: skip


def test_every_route_needs_the_token(runtime: Runtime) -> None:
    """Without a token, or with a wrong one, every route is 401."""
    rid = runtime.threads["dbos-deadlines"].record.record_id
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        for path in [*ROUTES, f"/threads/{rid}", f"/threads/{rid}.json", "/static/x", "/nope"]:
            assert c.get(path).status_code == 401, path
            wrong = c.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
        assert c.post(f"/threads/{rid}/pyspy").status_code == 401
        r = c.get("/threads.json")
        assert r.json()["status"] == 401
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_bearer_header_opens_every_route(runtime: Runtime) -> None:
    """``Authorization: Bearer <token>`` is enough."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        for path in ROUTES:
            r = c.get(path, headers={"Authorization": "Bearer s3cret"}, follow_redirects=False)
            assert r.status_code in (200, 303), path


def test_401_is_a_small_page_with_the_login_form(runtime: Runtime) -> None:
    """A browser gets an HTML 401 holding the POST login form (back to the page it asked
    for); a JSON client gets JSON naming the login URL."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        page = c.get("/threads?kind=queue", headers={"Accept": "text/html"})
        assert page.status_code == 401
        assert page.headers["content-type"].startswith("text/html")
        assert '<form method="post" action="/login">' in page.text
        assert 'name="next" value="/threads?kind=queue"' in page.text
        assert 'href="/static/dashboard.css"' in page.text
        data = c.get("/threads", headers={"Accept": "application/json"})
        assert data.status_code == 401
        assert data.json()["login"] == "/login"


def test_login_css_is_served_without_the_token(runtime: Runtime) -> None:
    """The login page is styled: its stylesheet needs no token (it holds no secret)."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        css = c.get("/static/dashboard.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert "main.login" in css.text


def test_login_is_a_post_that_sets_a_strict_httponly_cookie(runtime: Runtime) -> None:
    """``GET /login`` is the form; ``POST`` checks the token from the body and sets the
    cookie; a token in the URL logs nobody in."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        form = c.get("/login")
        assert form.status_code == 200
        assert '<form method="post"' in form.text
        assert 'name="token"' in form.text
        in_url = c.get("/login?token=s3cret", follow_redirects=False)
        assert in_url.status_code == 200
        assert "set-cookie" not in in_url.headers
        bad = c.post("/login", data={"token": "nope"})
        assert bad.status_code == 401
        assert "wrong token" in bad.text
        assert "set-cookie" not in bad.headers
        ok = c.post("/login", data={"token": "s3cret"}, follow_redirects=False)
        assert ok.status_code == 303
        assert ok.headers["location"] == "/threads"
        cookie = ok.headers["set-cookie"]
        assert "spindle_admin_token=" in cookie
        assert "s3cret" not in cookie  # a keyed hash, not the token
        assert "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert "Path=/" in cookie
        # The client keeps the cookie: later requests pass without a header.
        assert c.get("/threads").status_code == 200


def test_login_goes_back_to_a_local_page_only(runtime: Runtime) -> None:
    """``next`` returns to the page that was asked for, never to another host."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        back = c.post(
            "/login", data={"token": "s3cret", "next": "/history"}, follow_redirects=False
        )
        assert back.headers["location"] == "/history"
        for evil in ["//evil.example/x", "https://evil.example/", "/\\evil", "threads"]:
            r = c.post("/login", data={"token": "s3cret", "next": evil}, follow_redirects=False)
            assert r.headers["location"] == "/threads", evil


def test_logout_clears_the_cookie(runtime: Runtime) -> None:
    """``POST /logout`` ends the session."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        c.post("/login", data={"token": "s3cret"})
        assert c.get("/threads").status_code == 200
        out = c.post("/logout", follow_redirects=False)
        assert out.status_code == 303
        assert c.get("/threads").status_code == 401


def test_cross_site_posts_are_refused(runtime: Runtime) -> None:
    """A logged-in browser tricked by another site into a POST gets 403; same-origin passes."""
    rid = runtime.threads["dbos-deadlines"].record.record_id
    with TestClient(create_app(runtime.session, admin_token="s3cret", allow_pyspy=False)) as c:
        c.post("/login", data={"token": "s3cret"})
        path = f"/threads/{rid}/pyspy.json"
        assert c.post(path, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert c.post(path, headers={"Origin": "https://evil.example"}).status_code == 403
        assert c.post(path, headers={"Origin": "null"}).status_code == 403
        assert c.post(path, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
        assert c.post(path, headers={"Origin": "http://testserver"}).status_code == 200
        # A cross-site login is refused too (login CSRF).
        evil = c.post("/login", data={"token": "s3cret"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert evil.status_code == 403


def test_cookie_alone_is_enough(runtime: Runtime) -> None:
    """A request with only the cookie is let in; a wrong cookie, or the raw token as the
    cookie, is not."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        c.cookies.set("spindle_admin_token", session_value("s3cret"))
        assert c.get("/threads").status_code == 200
        c.cookies.set("spindle_admin_token", "s3cret")
        assert c.get("/threads").status_code == 401
        # A raw header with a broken cookie string is a 401, not a 500.
        c.cookies.clear()
        assert c.get("/threads", headers={"Cookie": 'spindle_admin_token="a;b'}).status_code == 401


def test_empty_token_is_refused_at_construction(runtime: Runtime) -> None:
    """admin_token="" would mean "no auth" by accident: it is a ValueError."""
    with pytest.raises(ValueError, match="admin_token"):
        create_app(runtime.session, admin_token="")


def test_websockets_are_behind_the_same_token() -> None:
    """A websocket route added to a protected app needs the token too (closed with 1008)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from spindle.web._auth import AdminAuth

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hi")
        await ws.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[Middleware(AdminAuth, token="s3cret")],
    )
    with TestClient(app) as c:
        with pytest.raises(WebSocketDisconnect) as refused, c.websocket_connect("/ws"):
            pass
        assert refused.value.code == 1008
        with c.websocket_connect("/ws", headers={"Authorization": "Bearer s3cret"}) as ws:
            assert ws.receive_text() == "hi"
        cross = {"Authorization": "Bearer s3cret", "Origin": "https://evil.example"}
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws", headers=cross):
            pass
