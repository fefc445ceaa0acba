"""The in-process outcome of a workflow: the first outcome published wins, as in the database."""

from __future__ import annotations

import threading

import pytest

from spindle.runtime._active import ActiveWorkflow
from spindle.runtime._errors import DBOSAwaitedWorkflowCancelledError


def test_a_cancel_after_success_leaves_the_result() -> None:
    entry = ActiveWorkflow("wf")
    entry.finish(result=42)
    assert entry.cancel() is False
    assert entry.outcome() == 42
    assert entry.cancelled is False


def test_a_cancel_after_an_error_leaves_the_error() -> None:
    entry = ActiveWorkflow("wf")
    boom = ValueError("boom")
    entry.finish(error=boom)
    entry.cancel()
    with pytest.raises(ValueError, match="boom"):
        entry.outcome()


def test_a_finish_after_cancel_stays_cancelled() -> None:
    entry = ActiveWorkflow("wf")
    assert entry.cancel() is True
    entry.finish(result=42)
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        entry.outcome()


def _outcome_of(entry: ActiveWorkflow) -> object:
    try:
        return entry.outcome()
    except DBOSAwaitedWorkflowCancelledError:
        return "cancelled"


def test_finish_racing_cancel_gives_every_waiter_the_same_outcome() -> None:
    """A waiter woken by ``done`` and a reader afterwards agree, whoever won the race."""
    for i in range(300):
        entry = ActiveWorkflow("wf")
        seen: list[object] = []
        entry.add_done_callback(lambda e=entry, out=seen: out.append(_outcome_of(e)))  # type: ignore[misc]
        barrier = threading.Barrier(2)

        def finisher(e: ActiveWorkflow = entry, b: threading.Barrier = barrier) -> None:
            b.wait()
            e.finish(result=42)

        def canceller(e: ActiveWorkflow = entry, b: threading.Barrier = barrier) -> None:
            b.wait()
            e.cancel()

        # The last thread to reach the barrier usually runs first: alternate who that is.
        threads = [threading.Thread(target=finisher), threading.Thread(target=canceller)]
        if i % 2:
            threads.reverse()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 1
        assert seen[0] in (42, "cancelled")
        assert _outcome_of(entry) == seen[0]
