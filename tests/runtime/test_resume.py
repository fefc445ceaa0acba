"""resume_workflow restarts the workflow: a cancelled or failed one runs on to SUCCESS.

Every wait is on an event with a bound, so a resume that does nothing fails the test in
seconds instead of hanging it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from spindle import DBOS, DBOSAwaitedWorkflowCancelledError, Queue

WAIT = 10.0

started = threading.Event()
release = threading.Event()
finished = threading.Event()
step_runs: list[str] = []
fail_body = [True]


@pytest.fixture(autouse=True)
def _reset(dbos: type[DBOS]) -> Iterator[None]:
    # Depends on the launched runtime so that its teardown (releasing held workflows) runs
    # before destroy(): a failing test then costs no join timeout.
    for event in (started, release, finished):
        event.clear()
    step_runs.clear()
    fail_body[0] = True
    yield
    release.set()  # never leave a held workflow blocking an executor thread


@DBOS.step()
def first_step(tag: str) -> str:
    step_runs.append(f"first:{tag}")
    started.set()
    return tag


@DBOS.step()
def second_step(tag: str) -> str:
    step_runs.append(f"second:{tag}")
    return tag.upper()


@DBOS.workflow()
def held_then_finishes(tag: str) -> str:
    """Step 1, wait for the test (outside any step), step 2: a cancel lands at step 2."""
    first_step(tag)
    assert release.wait(WAIT)
    result = second_step(tag)
    finished.set()
    return result


@DBOS.workflow()
def fails_in_its_body_once(tag: str) -> str:
    first_step(tag)
    if fail_body[0]:
        raise RuntimeError("the body fails the first time")
    result = second_step(tag)
    finished.set()
    return result


resume_queue = Queue("test-resume-queue", concurrency=1)


def test_resume_after_cancel_reaches_success(dbos: type[DBOS]) -> None:
    """Cancelled between its steps, resumed: it replays step 1, runs step 2, ends SUCCESS."""
    handle = DBOS.start_workflow(held_then_finishes, "a")
    assert started.wait(WAIT)
    DBOS.cancel_workflow(handle.workflow_id)
    release.set()  # the body reaches step 2, a boundary, and stops there as cancelled
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    assert handle.get_status().status == "CANCELLED"
    assert step_runs == ["first:a"]

    resumed = DBOS.resume_workflow(handle.workflow_id)
    assert resumed.workflow_id == handle.workflow_id
    assert finished.wait(WAIT), "resume_workflow did not run the workflow again"
    assert resumed.get_result() == "A"
    assert resumed.get_status().status == "SUCCESS"
    # The recorded step was replayed, not run again.
    assert step_runs == ["first:a", "second:a"]


def test_resume_after_error_reaches_success(dbos: type[DBOS]) -> None:
    """A workflow that failed in its body is resumed once the cause is gone: SUCCESS."""
    handle = DBOS.start_workflow(fails_in_its_body_once, "b")
    with pytest.raises(RuntimeError, match="fails the first time"):
        handle.get_result()
    assert handle.get_status().status == "ERROR"
    fail_body[0] = False
    resumed = DBOS.resume_workflow(handle.workflow_id)
    assert finished.wait(WAIT), "resume_workflow did not run the workflow again"
    assert resumed.get_result() == "B"
    assert DBOS.retrieve_workflow(handle.workflow_id).get_status().status == "SUCCESS"
    assert step_runs == ["first:b", "second:b"]


def test_resume_of_a_queued_workflow_reaches_success_through_its_queue(
    dbos: type[DBOS],
) -> None:
    """A cancelled queued workflow goes back to its queue on resume and runs to SUCCESS."""
    handle = resume_queue.enqueue(held_then_finishes, "c")
    assert started.wait(WAIT)
    DBOS.cancel_workflow(handle.workflow_id)
    release.set()
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    resumed = DBOS.resume_workflow(handle.workflow_id)
    assert finished.wait(WAIT), "the resumed workflow never left its queue"
    assert resumed.get_result() == "C"
    status = resumed.get_status()
    assert (status.status, status.queue_name) == ("SUCCESS", "test-resume-queue")
