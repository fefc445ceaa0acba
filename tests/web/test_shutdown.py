"""/shutdown and /shutdown.json: the server-drawn timeline and its violations."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from spindle import DBOS
from spindle.diagnostics import DiagnosticsSession, ThreadRegistry
from spindle.diagnostics._phases import SHUTDOWN_PHASES
from spindle.web import create_app
from tests.conftest import MakeDBOS

from .conftest import Runtime, record_shutdown


def test_no_shutdown_yet_is_a_page_not_an_error() -> None:
    """Before any destroy() the page says so."""
    session = DiagnosticsSession(ThreadRegistry(), service_name="shop", enabled=True)
    with TestClient(create_app(session)) as c:
        r = c.get("/shutdown")
        assert r.status_code == 200
        assert "No shutdown recorded yet" in r.text
        assert c.get("/shutdown.json").json() == {"service": "shop", "timelines": []}


def test_clean_shutdown_draws_phases_and_thread_marks(runtime: Runtime) -> None:
    """A clean run: one bar per planned phase, one row per thread with signal/exit/join marks."""
    timeline = record_shutdown(runtime, fault=False)
    assert timeline.violations == []
    with TestClient(create_app(runtime.session)) as c:
        html = c.get("/shutdown").text
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert len(re.findall(r'<rect [^>]*class="phase"', svg)) == len(SHUTDOWN_PHASES)
    assert len(re.findall(r'class="mark signal"', svg)) == 8
    assert len(re.findall(r'class="mark exit exited-ok"', svg)) == 8
    assert len(re.findall(r'class="mark join(?: quick)?"', svg)) == 8
    assert 'class="vline dbclose"' in svg  # DB close marked, not red
    assert 'class="vline dbinterrupt"' in svg
    assert "Every ordering rule held." in html
    assert "violation" not in svg


def test_ordering_fault_is_drawn_in_red_with_the_rule_and_stacks(runtime: Runtime) -> None:
    """DB closed while a thread was alive: violation section, rule sentence, its stack."""
    timeline = record_shutdown(runtime, fault=True)
    rules = {v.rule for v in timeline.violations}
    assert "db-closed-while-thread-alive" in rules
    with TestClient(create_app(runtime.session)) as c:
        html = c.get("/shutdown").text
    assert 'class="verdict bad"' in html
    assert '<article class="violation" data-rule="db-closed-while-thread-alive">' in html
    assert "next query fails or hangs" in html
    assert "dbos-stuck-listener" in html
    assert "stack of dbos-stuck-listener" in html
    assert "release.wait(30.0)" in html  # the stuck thread's own line in its stack
    assert 'class="label thread violation">dbos-stuck-listener' in html
    assert 'class="vline dbclose violation"' in html


def test_shutdown_json_has_timelines_newest_first(runtime: Runtime) -> None:
    """The JSON is the report format, newest first, with stacks also as text."""
    first = record_shutdown(runtime, fault=False)
    second = record_shutdown(runtime, fault=True)
    with TestClient(create_app(runtime.session)) as c:
        data = c.get("/shutdown.json").json()
        ids = [t["shutdown_id"] for t in data["timelines"]]
        assert ids == [second.shutdown_id, first.shutdown_id]
        bad = data["timelines"][0]["violations"]
        v = next(v for v in bad if v["rule"] == "db-closed-while-thread-alive")
        assert v["thread_names"] == ["dbos-stuck-listener"]
        assert any("release.wait" in text for text in v["stack_text"].values())
        one = c.get(f"/shutdown.json?id={first.shutdown_id}").json()
        assert [t["shutdown_id"] for t in one["timelines"]] == [first.shutdown_id]
        page = c.get(f"/shutdown?id={first.shutdown_id}").text
        assert "Every ordering rule held." in page
        assert c.get("/shutdown?id=nope").status_code == 404
        assert c.get("/shutdown.json?id=nope").status_code == 404


def test_violation_stacks_never_show_locals(runtime: Runtime) -> None:
    """Locals in a violation's stacks (captured with locals on) stay out of HTML and JSON."""
    timeline = record_shutdown(runtime, fault=True)
    v = timeline.violations[0]
    tid = str(v.thread_ids[0])
    v.stacks[tid] = [dict(f, locals={"token": "'hunter2'"}) for f in v.stacks.get(tid, [])] or [
        {"filename": "x.py", "lineno": 1, "function": "f", "line": None, "locals": {"t": "hunter2"}}
    ]
    with TestClient(create_app(runtime.session)) as c:
        assert "hunter2" not in c.get("/shutdown").text
        assert "hunter2" not in c.get("/shutdown.json").text


def test_the_page_says_what_each_phase_and_prepare_step_stops(runtime: Runtime) -> None:
    """The dashboard reads the same phase specs as the runtime and the rules."""
    from html import escape

    from spindle.diagnostics._phases import PHASE_SPECS, PREPARE_STEPS

    record_shutdown(runtime, fault=False)
    with TestClient(create_app(runtime.session)) as c:
        html = c.get("/shutdown").text
    specs_list = html[html.index('id="phase-specs"') :]
    for spec in (*PREPARE_STEPS, *PHASE_SPECS):
        assert f"<code>{spec.name}</code>: {escape(spec.stops)}" in specs_list
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert f"stops {escape(PHASE_SPECS[0].stops)}" in svg


def test_a_late_spawn_shows_the_spawners_stack_under_that_name(make_dbos: MakeDBOS) -> None:
    """spawn_after_shutdown: the stack is labelled as the spawner's, not the late thread's,
    and the rule links to its explanation."""
    make_dbos(diagnostics_fault="spawn_after_shutdown", enable_diagnostics=True).launch()
    DBOS.destroy()
    session = DBOS.runtime.diag
    assert session is not None
    with TestClient(create_app(session)) as c:
        html = c.get("/shutdown").text
        assert "stack of the code that spawned dbos-late-spawn" in html
        assert "stack of dbos-late-spawn<" not in html
        assert 'href="/rules#spawn-after-shutdown-began"' in html
        rules = c.get("/rules").text
    assert 'id="spawn-after-shutdown-began"' in rules
    assert "The stack shown is the spawner" in rules


def test_the_rules_page_and_docs_say_the_same() -> None:
    """docs/shutdown-rules.md explains every rule with the text /rules serves."""
    from spindle.diagnostics import RULES
    from spindle.diagnostics._rule_docs import RULE_DOCS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "shutdown-rules.md").read_text()
    assert set(RULE_DOCS) == set(RULES)
    for rule, text in RULE_DOCS.items():
        assert f"## {rule}\n" in doc
        assert text.why in doc
        assert text.fix in doc
        assert RULES[rule] in doc
