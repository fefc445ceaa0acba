"""The dashboard in a real headless Chromium, served by uvicorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle.diagnostics import ThreadKind
from spindle.web import create_app
from tests._requires import require_htmx

from .conftest import Runtime, Served, record_shutdown, serve

pytestmark = pytest.mark.browser

RED = "rgb(198, 40, 40)"  # --red in dashboard.css


@pytest.fixture
def served(runtime: Runtime) -> Iterator[Served]:
    """The live runtime's dashboard served by uvicorn in a thread (stopped at teardown)."""
    yield from serve(create_app(runtime.session))


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page; its context is closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_dashboard_shows_kinds_filters_and_opens_a_thread_stack(
    served: Served, page: Any, artifacts: Path
) -> None:
    """All present kinds are listed; filtering by kind keeps only it; a thread shows its stack."""
    page.goto(f"{served.url}/threads")
    kinds = page.locator("tbody.kind").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds == ["timeout", "notification_listener", "queue", "poller", "scheduler", "foreign"]
    page.screenshot(path=str(artifacts / "threads.png"), full_page=True)

    page.select_option("#filter-kind", "queue")
    page.click("#filter-apply")
    page.wait_for_url("**/threads?kind=queue*")
    rows = page.locator("tr.thread").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert rows == ["queue", "queue", "queue"]
    page.screenshot(path=str(artifacts / "threads-queue.png"), full_page=True)

    page.click("text=dbos-queue-worker[emails]")
    page.wait_for_selector("h1.thread-name")
    assert page.inner_text("h1.thread-name") == "dbos-queue-worker[emails]"
    stack = page.inner_text("#stack")
    assert "idle" in stack
    assert "stop.wait" in stack
    page.screenshot(path=str(artifacts / "thread.png"), full_page=True)

    page.click("text=History")
    page.wait_for_selector("#history-svg")
    assert page.locator("#history-svg rect.state-running").count() >= 8
    page.screenshot(path=str(artifacts / "history.png"), full_page=True)


def test_live_refresh_keeps_the_filter_and_shows_new_threads(
    served: Served, page: Any, runtime: Runtime
) -> None:
    """htmx re-fetches the fragment with the filter; a new queue worker appears unreloaded."""
    require_htmx()
    page.set_viewport_size({"width": 1000, "height": 300})  # short, so the page scrolls
    page.goto(f"{served.url}/threads?kind=queue")
    page.evaluate("window.scrollTo(0, 120); window.__marker = 'same page'")
    assert page.evaluate("window.scrollY") == 120
    runtime.spawn(ThreadKind.QUEUE, "dbos-queue-worker[late]", parent="dbos-queue-manager")
    with page.expect_response(lambda r: "/threads/fragment?kind=queue" in r.url):
        pass
    page.wait_for_selector("text=dbos-queue-worker[late]")
    assert page.evaluate("window.__marker") == "same page"  # swapped in place, not reloaded
    assert page.evaluate("window.scrollY") == 120  # the swap kept the scroll position
    rows = page.locator("tr.thread").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert set(rows) == {"queue"}


def test_pyspy_dump_from_the_thread_page(
    served: Served, page: Any, runtime: Runtime, artifacts: Path
) -> None:
    """The button takes a real py-spy dump: native frames and GIL ownership are shown."""
    rid = runtime.threads["dbos-deadlines"].record.record_id
    page.goto(f"{served.url}/threads/{rid}")
    page.click("#pyspy-button")
    page.wait_for_selector("#pyspy-gil, #pyspy-reason", timeout=30_000)
    assert page.locator("#pyspy-reason").count() == 0, page.inner_text("#pyspy-reason")
    assert "GIL" in page.inner_text("#pyspy-gil")
    assert page.locator("#pyspy-frames li").count() > 0
    page.screenshot(path=str(artifacts / "pyspy.png"), full_page=True)


def test_shutdown_view_shows_the_ordering_violation_in_red(
    runtime: Runtime, page: Any, artifacts: Path
) -> None:
    """A DB closed under a live thread: the violation, its rule and the thread's row are red."""
    record_shutdown(runtime, fault=True)
    for served in serve(create_app(runtime.session)):
        page.goto(f"{served.url}/shutdown")
        violation = page.locator('article.violation[data-rule="db-closed-while-thread-alive"]')
        assert violation.count() == 1
        assert "next query fails or hangs" in violation.inner_text()
        assert violation.evaluate("e => getComputedStyle(e).color") == RED
        label = page.locator("svg text.label.thread.violation")
        assert label.count() == 1
        assert "dbos-stuck-listener" in label.text_content()
        assert label.evaluate("e => getComputedStyle(e).fill") == RED
        close = page.locator("svg line.vline.dbclose.violation")
        assert close.evaluate("e => getComputedStyle(e).stroke") == RED
        page.screenshot(path=str(artifacts / "shutdown.png"), full_page=True)
