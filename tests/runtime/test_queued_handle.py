"""A handle of a queued workflow that starts in this process takes the run's outcome from
the run itself: no status read once the start was seen, even when the run has finished and
left the in-flight table before the handle looks (both backends)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from spindle import DBOS, DBOSNonExistentWorkflowError, Queue, SetWorkflowID
from spindle.runtime._context import current_workflow
from spindle.runtime._handles import WorkflowHandle
from spindle.runtime._rows import SUCCESS
from tests._waits import wait_until, wait_until_in
from tests.conftest import MakeDBOS

WAIT = 30.0

handle_queue = Queue("test-queued-handle")
# One at a time: a held workflow keeps the next one queued until the test lets it go.
serial_queue = Queue("test-queued-handle-serial", concurrency=1, polling_interval_sec=0.1)
unblock = threading.Event()
body_started = threading.Event()


@DBOS.workflow()
def q_blocker() -> None:
    assert unblock.wait(WAIT)


@DBOS.workflow()
def q_started(x: int) -> int:
    body_started.set()
    return x * 3


def test_handle_of_a_run_seen_starting_here_reads_no_status(dbos: type[DBOS]) -> None:
    unblock.clear()
    body_started.clear()
    rt = dbos.runtime
    sysdb = rt.sysdb
    original = sysdb.get_status
    reads: list[str] = []

    def counted(workflow_id: str) -> Any:
        row = original(workflow_id)
        if workflow_id == "qh-1":
            reads.append(row.status if row is not None else "none")
            if len(reads) == 1:
                # Hold the handle here (its watch registered, its first read saw the row
                # queued) until the run started, finished and left the table: the order in
                # which the old handle read the row a second time.
                unblock.set()
                assert body_started.wait(WAIT)
                assert rt.active.idle.wait(WAIT)
        return row

    blocker = serial_queue.enqueue(q_blocker)
    with SetWorkflowID("qh-1"):
        handle = serial_queue.enqueue(q_started, 7)
    sysdb.get_status = counted  # type: ignore[method-assign]
    try:
        assert handle.get_result() == 21
    finally:
        del sysdb.get_status
        unblock.set()
    blocker.get_result()
    assert len(reads) == 1, reads
    # The outcome the handle returned is the recorded one, and a new handle reads it back.
    status = dbos.get_workflow_status("qh-1")
    assert status is not None
    assert status.status == SUCCESS
    assert dbos.retrieve_workflow("qh-1").get_result() == 21


@DBOS.workflow()
def q_triple(x: int) -> int:
    return x * 3


def test_handle_of_a_run_that_succeeded_here_reads_no_status(dbos: type[DBOS]) -> None:
    rt = dbos.runtime
    sysdb = rt.sysdb
    original = sysdb.get_status
    reads: list[str] = []

    def counted(workflow_id: str) -> Any:
        reads.append(workflow_id)
        return original(workflow_id)

    with SetWorkflowID("qh-2"):
        handle = handle_queue.enqueue(q_triple, 5)
    # The run finishes (and leaves the in-flight table) before the handle is asked.
    assert dbos.retrieve_workflow("qh-2").get_result() == 15
    assert rt.active.get("qh-2") is None
    sysdb.get_status = counted  # type: ignore[method-assign]
    try:
        assert handle.get_result() == 15
    finally:
        del sysdb.get_status
    assert reads == [], "the recorded output kept for handles, not a status read"
    # Deleting the row drops what was kept: a handle reads the database again.
    dbos.delete_workflow("qh-2")
    with pytest.raises(DBOSNonExistentWorkflowError):
        handle.get_result()


@DBOS.workflow()
def q_local_later(x: int) -> int:
    return x + 1


def test_handle_of_a_workflow_this_process_will_start_polls_slowly(dbos: type[DBOS]) -> None:
    """Enqueued on a queue drained here: a start here wakes the handle, so its first status
    read (which only looks for a run in another process) comes 100 ms into the wait, not
    10 ms: handles waiting behind a backlog do not read their rows again and again."""
    unblock.clear()
    sysdb = dbos.runtime.sysdb
    original = sysdb.get_status
    first_read: list[float] = []

    def counted(workflow_id: str) -> Any:
        if workflow_id == "qh-3" and not first_read:
            first_read.append(time.monotonic())
            unblock.set()  # the queue moves on once the handle has read once
        return original(workflow_id)

    blocker = serial_queue.enqueue(q_blocker)
    with SetWorkflowID("qh-3"):
        handle = serial_queue.enqueue(q_local_later, 1)
    sysdb.get_status = counted  # type: ignore[method-assign]
    try:
        began = time.monotonic()
        assert handle.get_result() == 2
    finally:
        del sysdb.get_status
        unblock.set()
    blocker.get_result()
    assert len(first_read) == 1
    assert first_read[0] - began >= 0.1


def test_a_handle_leaves_an_entry_without_its_runner_to_the_executor(dbos: type[DBOS]) -> None:
    """A queued start puts the entry in the in-flight table a moment before it sets its
    runner: a handle asked then waits, and does not take the claim the executor's task
    needs to run it (taken, the workflow would be left to nobody)."""
    rt = dbos.runtime
    entry, created = rt.active.acquire("qh-4", is_async=False)
    assert created
    assert entry.runner is None
    results: list[Any] = []
    waiter = threading.Thread(
        target=lambda: results.append(WorkflowHandle(rt, "qh-4", None).get_result())
    )
    waiter.start()
    try:
        wait_until_in(waiter, "_wait_entry")
        assert entry.claim(), "the handle took the claim"
        entry.finish(result=12)
    finally:
        entry.finish(error=RuntimeError("test over"))  # no-op once finished
        rt.active.release(entry)
        waiter.join(WAIT)
    assert results == [12]


def test_a_parent_runs_a_dequeued_child_whose_runner_came_after_it_looked(
    dbos: type[DBOS],
) -> None:
    """A waiter inside a workflow that finds a dequeued entry without its runner (a queued
    start puts it in the table a moment before) looks again: its executor thread may be
    one the child needs. Before, it only waited, and a full executor deadlocked."""
    rt = dbos.runtime
    entry, created = rt.active.acquire("qh-5", is_async=False)
    assert created
    entry.dequeued = True
    outcome: list[Any] = []

    def parent() -> None:
        current_workflow.set(object())  # type: ignore[arg-type]  # inside a workflow
        outcome.append(WorkflowHandle(rt, "qh-5", None)._result())

    waiter = threading.Thread(target=parent, name="qh-parent")
    waiter.start()
    try:
        wait_until_in(waiter, "_wait_entry")

        def run() -> None:
            ran_on["qh-5"] = threading.current_thread().name
            entry.finish(result=15)

        entry.runner = run  # after the waiter's first look
        waiter.join(WAIT)
        assert not waiter.is_alive(), "the waiter never ran the child"
    finally:
        entry.finish(error=RuntimeError("test over"))  # no-op once finished
        rt.active.release(entry)
        waiter.join(WAIT)
    assert outcome == [15]
    assert ran_on["qh-5"] == "qh-parent"


ran_on: dict[str, str] = {}
target_ran = threading.Event()


@DBOS.workflow()
def q_target(x: int) -> int:
    ran_on["target"] = threading.current_thread().name
    target_ran.set()
    return x + 1


def test_a_waiter_outside_a_workflow_runs_a_dequeued_workflow_on_sqlite_only(
    make_dbos: MakeDBOS,
) -> None:
    """A thread that waits for a dequeued workflow not started yet: on PostgreSQL it leaves
    it to the executor, whose threads the queue worker scheduled it on (an extra runner
    per waiting client only fought them for the cores), and it runs once a thread is free;
    on SQLite it runs it itself, its writes joining the group commit."""
    make_dbos(max_executor_threads=1).launch()
    rt = DBOS.runtime
    unblock.clear()
    target_ran.clear()
    blocker = handle_queue.enqueue(q_blocker)  # holds the only executor thread
    with SetWorkflowID("qh-target"):
        target = handle_queue.enqueue(q_target, 4)
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(target.get_result()), name="qh-waiter")
    try:
        wait_until(
            lambda: getattr(rt.active.get("qh-target"), "runner", None) is not None,
            "the worker handing qh-target to the executor",
        )
        waiter.start()
        if rt.sysdb.sqlite:
            assert target_ran.wait(WAIT), "the waiting thread left it to the busy executor"
        else:
            wait_until_in(waiter, "_wait_entry")
            assert not target_ran.is_set(), "the waiting thread ran the workflow"
    finally:
        unblock.set()
    assert blocker.get_result() is None
    waiter.join(WAIT)
    assert results == [5]
    if rt.sysdb.sqlite:
        assert ran_on["target"] == "qh-waiter"
    else:
        assert ran_on["target"].startswith("dbos-executor-")


@DBOS.workflow()
def q_parent(depth: int) -> int:
    if depth == 0:
        return 1
    handles = [handle_queue.enqueue(q_parent, depth - 1) for _ in range(2)]
    return sum(h.get_result() for h in handles)


def test_parents_waiting_on_queued_children_do_not_deadlock_a_small_executor(
    make_dbos: MakeDBOS,
) -> None:
    """Inside a workflow a waiter still runs its unstarted child: two executor threads,
    both held by parents waiting on queued children, would otherwise wait forever."""
    make_dbos(max_executor_threads=2).launch()
    assert handle_queue.enqueue(q_parent, 3).get_result() == 8
    assert len(DBOS.list_workflows(name="q_parent", status="SUCCESS")) == 15
