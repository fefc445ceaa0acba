"""Exit: a stuck step never holds the process, SIGTERM runs the shutdown, destroy() is one.

Subprocess tests run on both backends (the child's system database is the test's).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spindle import DBOS, DBOSConfigError, DBOSDestroyInWorkflowError
from spindle.diagnostics import ShutdownTimeline
from spindle.diagnostics._phases import SHUTDOWN_PHASES
from tests.conftest import MakeDBOS
from tests.runtime import exit_app

ROOT = Path(__file__).resolve().parents[2]
JOIN_TIMEOUT = 1.0


def _child(mode: str, db_url: str, report: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.exit_app", mode, db_url, str(report)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_stuck_step_destroy_returns_and_process_exits(db_url: str, tmp_path: Path) -> None:
    """A step blocking forever: destroy() returns within the join timeout (plus the other
    phases), reports the worker leaked, and the process exits within 1 s after, the time
    recorded in the report."""
    report = tmp_path / "report.json"
    child = _child("stuck", db_url, report)
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        child.wait(60)
        exited = time.time()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _out, err = child.communicate()
    assert line[:1] == ["DESTROYED"], (line, err)
    took, returned = float(line[1]), float(line[2])
    assert child.returncode == 0, err
    assert took < JOIN_TIMEOUT + 1.0, f"destroy() took {took:.3f} s"
    assert exited - returned < 1.0, f"the process exited {exited - returned:.3f} s after destroy"
    data = json.loads(report.read_text())
    rules = data["violations"]
    leaked = [n for v in rules if v["rule"] == "join-timeout" for n in v["thread_names"]]
    assert any(name.startswith("dbos-executor-") for name in leaked), rules
    assert 0 <= data["exit_after_destroy_sec"] < 1.0
    assert "leaving leaked threads: dbos-executor-" in err


@pytest.mark.slow
def test_sigterm_mid_workflow_runs_the_shutdown(
    make_dbos: MakeDBOS, db_url: str, tmp_path: Path
) -> None:
    """SIGTERM to a child mid-workflow: the ordered shutdown runs (report written, no
    violation), the child still dies of SIGTERM, and the workflow completes after relaunch."""
    report = tmp_path / "report.json"
    child = _child("sigterm", db_url, report)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        child.send_signal(signal.SIGTERM)
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _out, err = child.communicate()
    assert child.returncode == -signal.SIGTERM, err  # the default action: status 143
    data = json.loads(report.read_text())
    assert len(data["phases"]) == len(SHUTDOWN_PHASES)
    assert data["violations"] == []
    assert "SIGTERM received" in err

    assert callable(exit_app.exit_waiting_workflow)  # registered here under the same name
    make_dbos(thread_join_timeout_sec=5.0).launch()  # recovers it (same executor id)
    handle = DBOS.retrieve_workflow(exit_app.WORKFLOW_ID)
    assert handle.get_status().status == "PENDING"
    DBOS.send(exit_app.WORKFLOW_ID, "go", "go")
    assert handle.get_result() == "first+go"


@pytest.mark.slow
def test_sigterm_to_a_busy_main_thread(db_url: str, tmp_path: Path) -> None:
    """SIGTERM while the main thread starts workflows in a loop (holding the runtime's locks
    for moments): the shutdown runs off the handler, completes, and the process dies of it."""
    report = tmp_path / "report.json"
    child = _child("busy", db_url, report)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        child.send_signal(signal.SIGTERM)
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _out, err = child.communicate()
    assert child.returncode == -signal.SIGTERM, err
    data = json.loads(report.read_text())
    assert len(data["phases"]) == len(SHUTDOWN_PHASES)
    assert data["violations"] == []


@pytest.mark.slow
def test_sigterm_chains_to_the_apps_own_handler(db_url: str, tmp_path: Path) -> None:
    """An app with its own SIGTERM handler keeps it: the shutdown runs first, then it."""
    report = tmp_path / "report.json"
    child = _child("chained", db_url, report)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        child.send_signal(signal.SIGTERM)
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        out, err = child.communicate()
    assert child.returncode == 7, err
    assert out.strip() == "APP-HANDLER"
    assert json.loads(report.read_text())["violations"] == []


def test_handle_signals_false_leaves_sigterm_alone(make_dbos: MakeDBOS) -> None:
    """``handle_signals=False``: launch() installs nothing."""
    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        make_dbos(handle_signals=False).launch()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


GATE = threading.Event()


@DBOS.step()
def exit_held_step() -> str:
    GATE.wait(60)
    return "held"


@DBOS.workflow()
def exit_held_workflow() -> str:
    return exit_held_step()


def test_concurrent_destroy_callers_all_see_the_finished_timeline(
    make_dbos: MakeDBOS,
) -> None:
    """Four threads call destroy() at once while a step holds shutdown in its join: every
    one returns only after the one shutdown finished, and all see its timeline."""
    GATE.clear()
    make_dbos(thread_join_timeout_sec=JOIN_TIMEOUT).launch()
    DBOS.start_workflow(exit_held_workflow)
    barrier = threading.Barrier(4)
    seen: list[tuple[ShutdownTimeline | None, float]] = []
    lock = threading.Lock()

    def caller() -> None:
        barrier.wait()
        DBOS.destroy()
        with lock:
            seen.append((DBOS.last_shutdown_timeline, time.monotonic()))

    threads = [threading.Thread(target=caller, name=f"destroyer-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    GATE.set()  # release the stuck worker so the test leaks no thread
    for t, _rec in DBOS.runtime.executor.worker_records():
        t.join()
    timelines = {id(tl) for tl, _ in seen}
    timeline = seen[0][0]
    assert len(seen) == 4
    assert len(timelines) == 1
    assert timeline is not None
    assert timeline.ended_mono is not None
    assert all(at >= timeline.ended_mono for _, at in seen)
    assert len(timeline.phases) == len(SHUTDOWN_PHASES)


@DBOS.step()
def destroying_step() -> str:
    try:
        DBOS.destroy()
    except DBOSDestroyInWorkflowError as exc:
        return f"step: {exc}"
    return "step: destroyed"


@DBOS.workflow()
def destroying_workflow() -> list[str]:
    out = []
    try:
        DBOS.destroy()
    except DBOSDestroyInWorkflowError as exc:
        out.append(f"workflow: {exc}")
    out.append(destroying_step())
    return out


def test_destroy_inside_a_workflow_or_step_raises(dbos: type[DBOS]) -> None:
    """destroy() in a workflow or a step raises a clear error and shuts nothing down."""
    outcome = DBOS.start_workflow(destroying_workflow).get_result()
    assert len(outcome) == 2
    # DBOS's exception text: "DBOS Error: <message>".
    assert outcome[0].startswith("workflow: DBOS Error: DBOS.destroy() must not be called from")
    assert outcome[1].startswith("step: DBOS Error: DBOS.destroy() must not be called from")
    assert DBOS.last_shutdown_timeline is None
    assert len(DBOS.start_workflow(destroying_workflow).get_result()) == 2  # still running


@pytest.mark.parametrize(
    ("key", "value"),
    [("handle_signals", "yes"), ("sys_db_client_retries", -1), ("sys_db_client_retries", True)],
)
def test_bad_fault_config_values_name_their_key(key: str, value: object) -> None:
    """A bad ``handle_signals`` or ``sys_db_client_retries`` raises at construction, naming it."""
    with pytest.raises(DBOSConfigError, match=key):
        DBOS(config={"name": "bad", key: value})  # type: ignore[misc]
