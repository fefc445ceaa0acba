"""Threads, timeouts, cancellation and the ordered shutdown, on both backends."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

import spindle.diagnostics as diagnostics_module
from spindle import (
    DBOS,
    DBOSAwaitedWorkflowCancelledError,
    DBOSConfigError,
    DBOSNotLaunchedError,
    SetWorkflowTimeout,
)
from spindle.diagnostics import SHUTDOWN_PHASES, ThreadKind, ThreadState
from spindle.testing import FakeClock
from tests.conftest import MakeDBOS

release = threading.Event()
started = threading.Event()


@pytest.fixture(autouse=True)
def _reset_events() -> None:
    release.clear()
    started.clear()


@DBOS.step()
def mark_started() -> None:
    started.set()


@DBOS.workflow()
def sleepy_child(seconds: float) -> str:
    mark_started()
    DBOS.sleep(seconds)
    return "child done"


@DBOS.workflow()
def sleepy_parent(seconds: float) -> str:
    handle = DBOS.start_workflow(sleepy_child, seconds)
    return handle.get_result()


@DBOS.workflow()
def tree(depth: int) -> int:
    if depth == 0:
        return 1
    handles = [DBOS.start_workflow(tree, depth - 1) for _ in range(2)]
    return sum(h.get_result() for h in handles)


def test_child_tree_does_not_deadlock_on_two_executor_threads(make_dbos: MakeDBOS) -> None:
    """Parents waiting on children never starve a bounded pool (2 threads, 31 workflows)."""
    make_dbos(max_executor_threads=2).launch()
    assert DBOS.start_workflow(tree, 4).get_result() == 16
    assert len(DBOS.list_workflows(status="SUCCESS")) == 31
    executors = [
        t for t in DBOS.thread_registry.snapshot().threads if t.kind is ThreadKind.EXECUTOR
    ]
    assert 1 <= len(executors) <= 2


def test_timeout_cancels_workflow_and_its_child(make_dbos: MakeDBOS) -> None:
    """A deadline cancels the workflow and the child it started; get_result raises.

    Time is a fake clock: the test moves it past the deadline instead of waiting.
    """
    clock = FakeClock()
    make_dbos(clock=clock).launch()
    with SetWorkflowTimeout(5.0):
        handle = DBOS.start_workflow(sleepy_parent, 60.0)
    assert started.wait(10)
    assert handle.get_status().status == "PENDING"
    clock.advance(5.5)
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    statuses = {w.name: w.status for w in DBOS.list_workflows()}
    assert statuses == {"sleepy_parent": "CANCELLED", "sleepy_child": "CANCELLED"}
    child = DBOS.list_workflows(name="sleepy_child")[0]
    parent = DBOS.list_workflows(name="sleepy_parent")[0]
    # The child inherited the parent's deadline.
    assert child.workflow_deadline_epoch_ms == parent.workflow_deadline_epoch_ms
    assert child.parent_workflow_id == parent.workflow_id


def test_ten_thousand_deadlines_add_no_thread(dbos: type[DBOS]) -> None:
    """Deadlines are heap entries of one thread, not threads."""
    rt = DBOS.runtime
    before = threading.active_count()
    far = rt.clock.now() + 3600
    for i in range(10_000):
        rt.timeouts.add(f"wf-{i}", far + i)
    assert threading.active_count() == before
    assert len(rt.timeouts) == 10_000
    assert rt.timeouts.entries()[0] == ("wf-0", far)
    for i in range(10_000):
        rt.timeouts.remove(f"wf-{i}")
    assert len(rt.timeouts) == 0


def test_a_resumed_workflow_runs_again_and_can_be_cancelled_again(dbos: type[DBOS]) -> None:
    """A cancelled workflow, resumed, is PENDING (running) again, and a second cancel stops it.

    That resume reaches SUCCESS is pinned in test_resume.py."""
    handle = DBOS.start_workflow(sleepy_child, 60.0)
    assert started.wait(10)
    DBOS.cancel_workflow(handle.workflow_id)
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    assert handle.get_status().status == "CANCELLED"
    # The recorded sleep keeps its wake-up time, so shorten it by resuming a fresh one.
    started.clear()
    resumed = DBOS.resume_workflow(handle.workflow_id)
    assert resumed.get_status().status == "PENDING"
    DBOS.cancel_workflow(handle.workflow_id)
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        resumed.get_result()


@DBOS.workflow()
def quick(x: int) -> int:
    mark_started()
    return x


def test_cancel_of_a_finished_workflow_changes_nothing(dbos: type[DBOS]) -> None:
    """Cancelling a workflow that already succeeded leaves it SUCCESS."""
    handle = DBOS.start_workflow(quick, 7)
    assert handle.get_result() == 7
    DBOS.cancel_workflow(handle.workflow_id)  # finished: cancel changes nothing
    assert handle.get_status().status == "SUCCESS"


def test_destroy_runs_the_ten_phases_in_order(dbos: type[DBOS]) -> None:
    """destroy() follows the design's list, flags nothing and leaves no runtime thread."""
    assert DBOS.start_workflow(quick, 1).get_result() == 1
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert [p.name for p in timeline.phases] == list(SHUTDOWN_PHASES)
    assert all(p.outcome == "ok" for p in timeline.phases)
    assert timeline.violations == []
    snapshot = DBOS.thread_registry.snapshot()
    assert all(not t.state.alive for t in snapshot.threads)
    assert all(t.join_outcome is not None for t in snapshot.threads)
    kinds = {t.kind for t in snapshot.threads}
    assert {ThreadKind.EVENT_LOOP, ThreadKind.TIMEOUT, ThreadKind.EXECUTOR} <= kinds
    assert not [t for t in threading.enumerate() if t.name.startswith("dbos-")]
    DBOS.destroy()  # idempotent
    assert DBOS.last_shutdown_timeline is timeline


def test_launch_after_destroy_in_the_same_process(dbos: type[DBOS]) -> None:
    """launch() after destroy() works again, with fresh threads."""
    assert quick(1) == 1
    DBOS.destroy()
    with pytest.raises(DBOSNotLaunchedError):
        DBOS.start_workflow(quick, 2)
    DBOS.launch()
    assert DBOS.start_workflow(quick, 2).get_result() == 2


def test_destroy_from_another_thread_runs_the_whole_shutdown(dbos: type[DBOS]) -> None:
    """destroy() called from a thread other than the launching one runs every phase."""
    done = threading.Event()

    def from_other_thread() -> None:
        DBOS.destroy()
        done.set()

    t = threading.Thread(target=from_other_thread)
    t.start()
    assert done.wait(30)
    t.join()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert [p.name for p in timeline.phases] == list(SHUTDOWN_PHASES)
    assert all(p.outcome == "ok" for p in timeline.phases)
    assert timeline.violations == []


@DBOS.step()
def count_in() -> None:
    with _lock:
        entered[0] += 1
        if entered[0] >= 8:
            eight_in.set()


_lock = threading.Lock()
entered = [0]
eight_in = threading.Event()
SLEEP = [1.5]


@DBOS.workflow()
def inflight(i: int) -> int:
    count_in()
    DBOS.sleep(SLEEP[0])
    return i


def test_destroy_with_300_inflight_workflows(
    make_dbos: MakeDBOS, caplog: pytest.LogCaptureFixture
) -> None:
    """In-flight workflows stay PENDING through destroy with no error and all complete after
    the next launch (the PR #553 class of bug)."""
    entered[0] = 0
    eight_in.clear()
    SLEEP[0] = 1.5
    make_dbos(max_executor_threads=8).launch()
    caplog.set_level(logging.WARNING)
    handles = [DBOS.start_workflow(inflight, i) for i in range(300)]
    assert eight_in.wait(30)
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("spindle")] == []
    ids = [h.workflow_id for h in handles]
    SLEEP[0] = 0.0
    DBOS.launch()  # recovers all 300
    results = [DBOS.retrieve_workflow(i).get_result() for i in ids]
    assert results == list(range(300))
    assert len(DBOS.list_workflows(status="SUCCESS")) == 300


def test_fault_close_db_before_join_is_flagged(make_dbos: MakeDBOS) -> None:
    """The pre-PR-553 order is caught by the rules over what happened."""
    make_dbos(diagnostics_fault="close_db_before_join").launch()
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    rules = {v.rule for v in timeline.violations}
    # Which of the two a thread trips depends on whether it had exited when the database
    # closed (no join outcome) or not yet (alive): either way the fault is caught.
    assert rules & {"thread-not-joined-before-db-close", "db-closed-while-thread-alive"}
    assert "phases-out-of-order" in rules


def test_fault_thread_ignoring_its_stop_event_is_flagged(make_dbos: MakeDBOS) -> None:
    """A thread that ignores its stop event outlives its join timeout and is flagged with
    its stack, and the database close is flagged as happening while it lived."""
    make_dbos(diagnostics_fault="ignore_stop_event", thread_join_timeout_sec=0.2).launch()
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    by_rule = {v.rule: v for v in timeline.violations}
    assert by_rule["join-timeout"].thread_names == ("dbos-fault-ignores-stop",)
    alive = by_rule["db-closed-while-thread-alive"]
    assert alive.thread_names == ("dbos-fault-ignores-stop",)
    assert any(alive.stacks.values())
    record = next(
        t for t in DBOS.thread_registry.snapshot().threads if t.name == "dbos-fault-ignores-stop"
    )
    assert record.captured_stack
    assert record.state in (ThreadState.LEAKED, ThreadState.EXITED_OK)


def test_fault_spawn_after_shutdown_is_flagged(make_dbos: MakeDBOS) -> None:
    """A thread spawned after shutdown began is flagged."""
    make_dbos(diagnostics_fault="spawn_after_shutdown").launch()
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    flagged = [v for v in timeline.violations if v.rule == "spawn-after-shutdown-began"]
    assert [v.thread_names for v in flagged] == [("dbos-late-spawn",)]


def test_clean_launch_destroy_cycles_flag_nothing(make_dbos: MakeDBOS) -> None:
    """200 clean launch/destroy cycles yield no violation."""
    make_dbos()
    for _ in range(200):
        DBOS.launch()
        DBOS.destroy()
        timeline = DBOS.last_shutdown_timeline
        assert timeline is not None
        assert timeline.violations == []


def test_bad_config_raises_naming_the_key(tmp_path: Path) -> None:
    """Unknown keys and bad values raise at construction with the key's name."""
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    with pytest.raises(DBOSConfigError, match="'max_executor_thread'"):
        DBOS(config={"name": "a", "max_executor_thread": 4})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(DBOSConfigError, match="'max_executor_threads'"):
        DBOS(config={"name": "a", "system_database_url": url, "max_executor_threads": 0})
    with pytest.raises(DBOSConfigError, match="'system_database_url'"):
        DBOS(config={"name": "a", "system_database_url": "mysql://x"})
    with pytest.raises(DBOSConfigError, match="'thread_join_timeout_sec'"):
        DBOS(config={"name": "a", "thread_join_timeout_sec": "10"})  # type: ignore[typeddict-item]
    with pytest.raises(DBOSConfigError, match="'name'"):
        DBOS(config={"system_database_url": url})
    with pytest.raises(ValueError, match="SetWorkflowTimeout"):
        SetWorkflowTimeout(-1)


def test_destroy_waits_for_active_workflows_when_asked(dbos: type[DBOS]) -> None:
    """workflow_completion_timeout_sec lets running workflows finish before the shutdown."""
    handle = DBOS.start_workflow(sleepy_child, 0.2)
    assert started.wait(10)
    DBOS.destroy(workflow_completion_timeout_sec=30)
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []
    DBOS.launch()
    assert DBOS.retrieve_workflow(handle.workflow_id).get_status().status == "SUCCESS"


ATEXIT_APP = """
import sys
from spindle import DBOS
from tests.runtime.test_lifecycle import sleepy_child
DBOS(config={"name": "atexit", "system_database_url": sys.argv[1], "run_admin_server": False,
             "shutdown_report_path": sys.argv[2]})
DBOS.launch()
DBOS.start_workflow(sleepy_child, 60.0)
print("started", flush=True)
"""


def test_destroy_runs_from_atexit(db_url: str, tmp_path: Path) -> None:
    """A process that exits without destroy() still shuts down in order, quietly."""
    import json
    import subprocess
    import sys

    report = tmp_path / "report.json"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", ATEXIT_APP, db_url, str(report)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "started"
    assert proc.stderr == ""
    data = json.loads(report.read_text())
    assert [p["name"] for p in data["phases"]] == list(SHUTDOWN_PHASES)
    assert data["violations"] == []


def test_destroy_records_the_steps_before_phase_one(dbos: type[DBOS]) -> None:
    """The poller gate, the stopping flag and the queues close before phase 1, on the record."""
    from spindle.diagnostics import EventType
    from spindle.diagnostics._phases import PREPARE_STEPS

    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    ends = [e for e in timeline.events if e.type is EventType.PREPARE_END]
    assert [e.attrs["step"] for e in ends] == [s.name for s in PREPARE_STEPS]
    assert all(e.attrs["outcome"] == "ok" for e in ends)
    first_phase = next(e for e in timeline.events if e.type is EventType.PHASE_START)
    assert all(e.seq < first_phase.seq for e in ends)
    assert timeline.violations == []


def test_fault_stacks_never_end_in_spindle_bookkeeping(make_dbos: MakeDBOS) -> None:
    """close_db_before_join: the violation stacks end in the threads' own frames, not in the
    registry recording their exit (which read like a lock problem)."""
    make_dbos(diagnostics_fault="close_db_before_join").launch()
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    diag = os.path.dirname(diagnostics_module.__file__) + os.sep
    for v in timeline.violations:
        for frames in v.stacks.values():
            assert frames
            assert not frames[-1]["filename"].startswith(diag), frames[-1]
