"""A handle of a queued workflow that starts in this process takes the run's outcome from
the run itself: no status read once the start was seen, even when the run has finished and
left the in-flight table before the handle looks (both backends)."""

from __future__ import annotations

import threading
from typing import Any

from spindle import DBOS, Queue, SetWorkflowID
from spindle.runtime._rows import SUCCESS

WAIT = 30.0

handle_queue = Queue("test-queued-handle")
first_read = threading.Event()
body_started = threading.Event()


@DBOS.workflow()
def q_after_first_read(x: int) -> int:
    body_started.set()
    assert first_read.wait(WAIT)
    return x * 3


def test_handle_of_a_run_seen_starting_here_reads_no_status(dbos: type[DBOS]) -> None:
    first_read.clear()
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
                # Hold the handle here (after its watch is registered and its first read
                # saw the row queued) until the run started, finished and left the table:
                # the order in which the old handle read the row a second time.
                first_read.set()
                assert body_started.wait(WAIT)
                assert rt.active.idle.wait(WAIT)
        return row

    sysdb.get_status = counted  # type: ignore[method-assign]
    try:
        with SetWorkflowID("qh-1"):
            handle = handle_queue.enqueue(q_after_first_read, 7)
        assert handle.get_result() == 21
    finally:
        del sysdb.get_status
    assert len(reads) == 1, reads
    # The outcome the handle returned is the recorded one, and a new handle reads it back.
    status = dbos.get_workflow_status("qh-1")
    assert status is not None
    assert status.status == SUCCESS
    assert dbos.retrieve_workflow("qh-1").get_result() == 21
