"""Every page that renders a user- or thread-controlled string renders it as text.

One hostile string goes everywhere a user or a thread can put one: a thread's name (the
thread list, its fragment, its page, the history strip's row label, a shutdown violation's
thread list and stack headings, the shutdown drawing), its status note, and a query or path
parameter echoed back by an error page. Each page must show it escaped and never raw.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from spindle.diagnostics import DiagnosticsSession, ThreadKind, load_report
from spindle.web import ReportSource, create_app
from spindle.web._app import build_app

from .conftest import Runtime, record_shutdown

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _assert_text_only(html: str, where: str) -> None:
    assert EVIL not in html, f"{where} renders a thread-controlled string as markup"
    assert ESCAPED in html, f"{where} does not show the string at all"


@pytest.fixture
def hostile(runtime: Runtime, tmp_path: Path) -> tuple[Runtime, int, Path]:
    """A live thread with a hostile name and status note, and a shutdown whose stuck
    thread (flagged by the rules) has a hostile name; the report is saved too."""
    report = tmp_path / "shutdown.json"
    runtime.session = DiagnosticsSession(
        runtime.registry, service_name="shop", enabled=True, report_path=str(report)
    )
    evil = runtime.spawn(ThreadKind.POLLER, EVIL)
    runtime.registry.set_status(evil.record, f"note {EVIL}")
    timeline = record_shutdown(runtime, fault=True, stuck_name=EVIL)
    assert any(EVIL in v.thread_names for v in timeline.violations)
    return runtime, evil.record.record_id, report


@pytest.mark.parametrize(
    "path",
    ["/threads", "/threads/fragment", "/threads/{id}", "/history", "/shutdown"],
)
def test_pages_escape_thread_names(hostile: tuple[Runtime, int, Path], path: str) -> None:
    """The thread list, its fragment, the thread page, the history and the shutdown page."""
    runtime, record_id, _ = hostile
    with TestClient(create_app(runtime.session)) as c:
        r = c.get(path.format(id=record_id))
        assert r.status_code == 200
        _assert_text_only(r.text, path)


def test_shutdown_violation_lists_escape_thread_names(
    hostile: tuple[Runtime, int, Path],
) -> None:
    """The violations section itself (not only the drawing) shows the names as text."""
    runtime, _, _ = hostile
    with TestClient(create_app(runtime.session)) as c:
        html = c.get("/shutdown").text
    section = html[html.index('id="violations"') :]
    _assert_text_only(section, "the violations section")
    assert f"Threads: {ESCAPED}" in section


def test_history_row_label_escapes_thread_names(hostile: tuple[Runtime, int, Path]) -> None:
    """The history SVG's row label (truncated text and its title) shows the name as text."""
    runtime, _, _ = hostile
    with TestClient(create_app(runtime.session)) as c:
        html = c.get("/history?kind=poller").text
    svg = html[html.index('id="history-svg"') :]
    label = f"{ESCAPED} (poller)"
    assert f">{label}<title>{label}</title></text>" in svg
    assert EVIL not in svg


def test_status_note_is_escaped(hostile: tuple[Runtime, int, Path]) -> None:
    """A thread's own status note is text on the list and on its page."""
    runtime, record_id, _ = hostile
    with TestClient(create_app(runtime.session)) as c:
        for path in ("/threads?kind=poller", f"/threads/{record_id}"):
            html = c.get(path).text
            assert f"note {ESCAPED}" in html, path
            assert f"note {EVIL}" not in html, path


@pytest.mark.parametrize(
    "path",
    [f"/shutdown?id={quote(EVIL)}", f"/threads/{quote(EVIL)}", f"/threads/{quote(EVIL)}.json"],
)
def test_error_pages_escape_the_parameter_they_echo(runtime: Runtime, path: str) -> None:
    """An unknown id in the query or the path comes back in a 4xx, as text."""
    with TestClient(create_app(runtime.session)) as c:
        r = c.get(path)
    assert 400 <= r.status_code < 500
    assert EVIL not in r.text


def test_offline_viewer_escapes_thread_names(hostile: tuple[Runtime, int, Path]) -> None:
    """A saved report, served with no app running, shows the names as text too."""
    _, _, report = hostile
    app = build_app(ReportSource([load_report(report)]), allow_pyspy=False, home="shutdown")
    with TestClient(app) as c:
        _assert_text_only(c.get("/shutdown").text, "the offline /shutdown")


def test_pyspy_dump_escapes_thread_names(runtime: Runtime) -> None:
    """A live thread's py-spy dump (page and fragment) names the thread as text."""
    evil = runtime.spawn(ThreadKind.POLLER, EVIL)
    with TestClient(create_app(runtime.session)) as c:
        for headers in ({}, {"HX-Request": "true"}):
            r = c.post(f"/threads/{evil.record.record_id}/pyspy", headers=headers)
            assert r.status_code == 200
            assert 'id="pyspy-gil"' in r.text, r.text
            _assert_text_only(r.text, f"the py-spy result {headers}")
