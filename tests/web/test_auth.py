"""The optional admin token: bearer header or cookie, a login form, 401 otherwise."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from spindle.web import create_app

from .conftest import Runtime

ROUTES = ["/", "/threads", "/threads.json", "/threads/fragment", "/shutdown", "/shutdown.json",
          "/history", "/history.json", "/lints.json", "/static/dashboard.css"]  # fmt: skip


def test_every_route_needs_the_token(runtime: Runtime) -> None:
    """Without a token, or with a wrong one, every route is 401."""
    rid = runtime.threads["dbos-deadlines"].record.record_id
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        for path in [*ROUTES, f"/threads/{rid}", f"/threads/{rid}.json"]:
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


def test_login_sets_the_cookie(runtime: Runtime) -> None:
    """``/login`` shows a form; ``?token=`` right sets the cookie, wrong is 401."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        form = c.get("/login")
        assert form.status_code == 200
        assert 'name="token"' in form.text
        bad = c.get("/login?token=nope")
        assert bad.status_code == 401
        assert "spindle_admin_token" not in bad.headers.get("set-cookie", "")
        ok = c.get("/login?token=s3cret", follow_redirects=False)
        assert ok.status_code == 303
        assert ok.headers["location"] == "/threads"
        cookie = ok.headers["set-cookie"]
        assert "spindle_admin_token=s3cret" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
        # The client keeps the cookie: later requests pass without a header.
        assert c.get("/threads").status_code == 200


def test_cookie_alone_is_enough(runtime: Runtime) -> None:
    """A request with only the cookie is let in; a wrong cookie is not."""
    with TestClient(create_app(runtime.session, admin_token="s3cret")) as c:
        c.cookies.set("spindle_admin_token", "s3cret")
        assert c.get("/threads").status_code == 200
        c.cookies.set("spindle_admin_token", "x")
        assert c.get("/threads").status_code == 401
        # A raw header with a broken cookie string is a 401, not a 500.
        c.cookies.clear()
        assert c.get("/threads", headers={"Cookie": 'spindle_admin_token="a;b'}).status_code == 401


def test_empty_token_is_refused_at_construction(runtime: Runtime) -> None:
    """admin_token="" would mean "no auth" by accident: it is a ValueError."""
    with pytest.raises(ValueError, match="admin_token"):
        create_app(runtime.session, admin_token="")
