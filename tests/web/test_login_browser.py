"""The admin server's login in a real headless Chromium: POST form, cookie, styled pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle import DBOS
from tests.conftest import MakeDBOS

pytestmark = pytest.mark.browser

TOKEN = "browser-s3cret"
HEADER_BG = "rgb(38, 50, 56)"  # header background in dashboard.css


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page; its context is closed after the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_login_flow_posts_the_form_sets_the_cookie_and_renders_styled(
    make_dbos: MakeDBOS, page: Any, artifacts: Path, db_url: str
) -> None:
    """A protected page is a styled 401 with the form; a wrong token is refused; the right
    one is POSTed (never in a URL), sets a Strict HttpOnly cookie on /dbos and lands back
    on the page asked for, rendered with its stylesheet; "Log out" clears the cookie."""
    make_dbos(
        run_admin_server=True, admin_port=0, enable_diagnostics=True, admin_token=TOKEN
    ).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    backend = "sqlite" if db_url.startswith("sqlite") else "postgres"
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))

    first = page.goto(f"{url}/dbos/threads?kind=admin_server")
    assert first.status == 401
    assert page.inner_text("h1") == "Admin token required"
    bg = page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
    assert bg == HEADER_BG  # the login's stylesheet loaded without the token
    page.screenshot(path=str(artifacts / f"login-401-{backend}.png"), full_page=True)

    page.fill("input[name=token]", "wrong")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.inner_text("p.error") == "wrong token"
    page.screenshot(path=str(artifacts / f"login-wrong-{backend}.png"), full_page=True)
    assert page.context.cookies() == []

    page.fill("input[name=token]", TOKEN)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == f"{url}/dbos/threads?kind=admin_server"
    assert page.inner_text("tr.thread td.name") == "dbos-admin-server"
    bg = page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
    assert bg == HEADER_BG
    page.screenshot(path=str(artifacts / f"login-after-{backend}.png"), full_page=True)

    (cookie,) = page.context.cookies()
    assert cookie["name"] == "spindle_admin_token"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dbos"
    assert TOKEN not in cookie["value"]
    assert ("POST", f"{url}/dbos/login") in requests
    assert not [u for _, u in requests if TOKEN in u]
    # The cookie keeps the session: other pages open without logging in again.
    assert page.goto(f"{url}/dbos/shutdown").status == 200
    # Log out (a POST from the header) ends it.
    with page.expect_navigation():
        page.click("form.logout button")
    assert page.url == f"{url}/dbos/login"
    assert page.context.cookies() == []
    assert page.goto(f"{url}/dbos/threads").status == 401
