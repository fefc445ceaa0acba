"""The shutdown page in headless Chromium: a hung shutdown watched live, and the phase table
of a shutdown whose join timed out (screenshots in test-artifacts/)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle import DBOS
from spindle.diagnostics._phases import SHUTDOWN_PHASES
from spindle.web import create_app
from tests.conftest import MakeDBOS

from .conftest import serve

pytestmark = pytest.mark.browser

release = threading.Event()
in_step = threading.Event()


@DBOS.step()
def slow_page_call() -> str:
    in_step.set()
    release.wait(60)
    return "done"


@DBOS.workflow()
def stuck_page_wf() -> str:
    return slow_page_call()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    release.clear()
    in_step.clear()
    yield
    release.set()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page; its context is closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_shutdown_page_shows_a_hung_join_live(
    make_dbos: MakeDBOS, page: Any, artifacts: Path, db_url: str
) -> None:
    """While destroy() waits on the executor stuck in a step: current phase, the thread,
    its workflow and step, its live stack innermost first; the page refreshes itself."""
    make_dbos(
        run_admin_server=True,
        admin_port=0,
        enable_diagnostics=True,
        thread_join_timeout_sec=30.0,
    ).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    handle = DBOS.start_workflow(stuck_page_wf)
    assert in_step.wait(10)
    destroyer = threading.Thread(target=DBOS.destroy, name="test-destroyer")
    destroyer.start()
    try:
        page.goto(f"{url}/dbos/shutdown")
        # The page refreshes every second while the shutdown runs: wait for the join of the
        # stuck worker (join_threads joins the other threads first, each for a moment).
        page.wait_for_selector("#joining")
        page.wait_for_function(
            "() => (document.querySelector('#live')?.innerText ?? '').includes('stuck_page_wf')"
        )
        live = page.inner_text("#live")
        assert "In progress: join_threads" in live
        assert "stuck_page_wf" in live
        assert handle.workflow_id in live
        assert "slow_page_call" in live
        frames = page.locator("#live-stack ol.stack li").all_inner_texts()
        # Innermost first: the wait inside the step on top, the step just below it.
        assert "Condition.wait" in frames[0]
        assert next(i for i, f in enumerate(frames) if "slow_page_call" in f) <= 3
        assert "captured" in page.inner_text("#live-stack figcaption")
        row = page.locator('#phases tr[data-phase="join_threads"]')
        assert row.get_attribute("data-outcome") == "running"
        assert "running for" in row.inner_text()
        backend = "postgres" if db_url.startswith("postgres") else "sqlite"
        page.screenshot(path=str(artifacts / f"shutdown-live-{backend}.png"), full_page=True)
        # The threads page answers too, and names the stuck worker's workflow and step.
        page.goto(f"{url}/dbos/threads?kind=executor,admin_server")
        worker = page.locator(f'tr.thread:has-text("{joining_name(page, url)}")')
        assert "stuck_page_wf" in worker.inner_text()
        assert "slow_page_call" in worker.inner_text()
        page.screenshot(path=str(artifacts / f"threads-during-join-{backend}.png"), full_page=True)
    finally:
        release.set()
        destroyer.join(30)
    assert not destroyer.is_alive()


def test_phase_table_names_the_timed_out_join(
    make_dbos: MakeDBOS, page: Any, artifacts: Path, db_url: str
) -> None:
    """The phase table: wall-clock start, offset, duration, outcome `timeout` in red for
    join_threads with the executor and its workflow; one stack per thread, with a toggle."""
    make_dbos(thread_join_timeout_sec=0.3, enable_diagnostics=True).launch()
    handle = DBOS.start_workflow(stuck_page_wf)
    assert in_step.wait(10)
    DBOS.destroy()
    session = DBOS.runtime.diag
    assert session is not None
    for served in serve(create_app(session)):
        page.goto(f"{served.url}/shutdown")
        rows = page.locator("#phases tbody tr")
        assert rows.count() == len(SHUTDOWN_PHASES)
        row = page.locator('#phases tr[data-phase="join_threads"]')
        assert row.get_attribute("data-outcome") == "timeout"
        text = row.inner_text()
        assert "dbos-executor-" in text
        assert "stuck_page_wf" in text
        assert "join timed out" in text
        assert "UTC" in text
        assert "+" in text
        assert row.evaluate("e => getComputedStyle(e.cells[5]).color") == "rgb(198, 40, 40)"
        # Each stack once, however many violations name its thread.
        blocks = page.locator("#stacks figure.stack-block")
        names = blocks.evaluate_all("els => els.map(e => e.dataset.thread)")
        assert len(names) == len(set(names)) >= 1
        first = page.locator("#stacks ol.stack").first
        top = first.locator("li").first.bounding_box()
        last = first.locator("li").last.bounding_box()
        assert top["y"] < last["y"]
        page.check("#outer-first")
        assert (
            first.locator("li").first.bounding_box()["y"]
            > first.locator("li").last.bounding_box()["y"]
        )
        page.uncheck("#outer-first")
        violation = page.locator('article.violation[data-rule="join-timeout"]')
        assert handle.workflow_id in violation.inner_text()
        assert violation.locator("a.rule-doc").get_attribute("href").endswith("/rules#join-timeout")
        backend = "postgres" if db_url.startswith("postgres") else "sqlite"
        page.screenshot(path=str(artifacts / f"shutdown-phases-{backend}.png"), full_page=True)
        page.click("a.rule-doc >> nth=0")
        page.wait_for_selector("section.rule#join-timeout")
    release.set()


def joining_name(page: Any, url: str) -> str:
    """The name of the thread the live shutdown is joining, from its JSON."""
    data = page.request.get(f"{url}/dbos/shutdown.json").json()
    return str(data["timelines"][0]["progress"]["joining"]["name"])
