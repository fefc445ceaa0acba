"""Workflow handles: wait for a result, in this process or from the database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _durable
from ._active import ActiveWorkflow, StartWatch
from ._context import current_workflow
from ._core import wait_async
from ._errors import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded,
    DBOSNonExistentWorkflowError,
    DBOSRuntimeShutdownError,
)
from ._introspection import require_status
from ._rows import CANCELLED, ERROR, MAX_RECOVERY_ATTEMPTS_EXCEEDED, SUCCESS
from ._serialization import deserialize
from ._status import WorkflowStatus

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._sysdb import SystemDatabase

R = TypeVar("R")

# Polling a workflow run elsewhere backs off from 10 ms to 1 s.
_POLL_MIN = 0.01
_POLL_MAX = 1.0
#: The first poll of a handle whose workflow this process is expected to start (enqueued
#: here, on a queue drained here): a start here wakes the handle without a read, so the
#: polls only look for a run in another process, and DBOS polls every 1 s. From 10 ms,
#: the handles waiting behind a backlog read their rows again and again for nothing (0.2
#: status reads per queued workflow, 16 % of the queued path's CPU samples).
_POLL_LOCAL_MIN = 0.1
#: How soon a waiter that may run the workflow looks for its runner again (see _wait_entry).
_RUNNER_RECHECK = 0.001


def _may_run(rt: Runtime, entry: ActiveWorkflow) -> bool:
    """Whether a thread waiting for this unstarted workflow runs it itself.

    Inside a workflow, always: that is the deadlock the claim exists for. Outside one, on
    PostgreSQL, not a workflow a queue worker started: the worker already scheduled it on
    the executor, and each client that also ran one waiting on its handle added a runner
    with its own backend fighting the executor's for two cores (bench_scale's queued
    workload, interleaved rounds in one process: queued/concurrent median 0.86 -> 0.93
    before the dequeue's plans were fixed, 0.85 -> 0.86 and 4.6 % more queued wf/s
    after). On SQLite it does: its run's writes join the group commit, one fsync for more
    writers (queued 10 % faster with it, six of six rounds).
    """
    return not entry.dequeued or rt.sysdb.sqlite or current_workflow.get() is not None


def _settled(rt: Runtime, workflow_id: str) -> tuple[bool, Any]:
    return settled(rt.sysdb, workflow_id)


def settled(sysdb: SystemDatabase, workflow_id: str) -> tuple[bool, Any]:
    """``(True, result)`` once the workflow ended (its error or cancellation is raised),
    ``(False, None)`` while it runs elsewhere."""
    row = sysdb.get_status(workflow_id)
    if row is None:
        raise DBOSNonExistentWorkflowError(workflow_id)
    if row.status == SUCCESS:
        return True, sysdb.codecs.decode(row.output, row.serialization)
    if row.status == ERROR and row.error is not None:
        raise sysdb.codecs.decode_error(row.error, row.serialization)
    if row.status == CANCELLED:
        raise DBOSAwaitedWorkflowCancelledError(workflow_id)
    if row.status == MAX_RECOVERY_ATTEMPTS_EXCEEDED:
        raise DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded(workflow_id)
    return False, None


class WorkflowHandle(Generic[R]):
    """A started workflow: its ID, its status, and (blocking) its result."""

    def __init__(
        self,
        rt: Runtime,
        workflow_id: str,
        entry: ActiveWorkflow | None,
        *,
        enqueued_mark: int | None = None,
        local: bool = False,
    ) -> None:
        self._rt = rt
        self._entry = entry
        self.workflow_id = workflow_id
        # Made by an enqueue in this process that wrote the row: ``rt.active.forgotten``
        # as it was before that insert (see _poll_result).
        self._enqueued_mark = enqueued_mark
        # ``local``: this process drains the queue and has the function, so it is expected
        # to start the workflow itself and wake this handle: polls begin slower.
        self._first_delay = _POLL_LOCAL_MIN if local else _POLL_MIN

    def get_workflow_id(self) -> str:
        """The workflow's ID."""
        return self.workflow_id

    def get_result(self) -> R:
        """Wait for the workflow to end; returns its result or raises its error.

        A cancelled (or timed-out) workflow raises ``DBOSAwaitedWorkflowCancelledError``.
        Inside a workflow the outcome is a step, ``DBOS.getResult``, as in DBOS: a replay
        returns what the first execution got, even if that workflow is gone since.
        """
        if _durable.calling_workflow() is None:
            return self._result()
        result: R = _durable.call(
            self._rt, "DBOS.getResult", self._result_unrecorded, child_workflow_id=self.workflow_id
        )
        return result

    def _result_unrecorded(self) -> R:
        with _durable.shutdown_unrecorded():
            return self._result()

    def _result(self) -> R:
        entry = self._entry or self._rt.active.get(self.workflow_id)
        if entry is not None:
            return self._outcome_of(entry)
        output = self._rt.active.finished_output(self.workflow_id)
        if output is not None:
            # It succeeded here lately: the recorded bytes, without reading the row back.
            kept: R = deserialize(output)
            return kept
        return self._poll_result()

    def _wait_entry(self, entry: ActiveWorkflow) -> None:
        """Wait for the entry's outcome, running the workflow here first if nobody started
        it and this thread may (:func:`_may_run`).

        A parent blocked on its unstarted child runs the child itself: it would otherwise
        hold a worker the child needs (deadlock on a bounded pool). The runner is checked
        before the claim: a queued workflow's entry is in the table a moment before its
        runner is set, and a claim taken in between would leave the workflow to nobody (the
        executor's task finds it claimed). So a waiter that may run it and finds no runner
        looks again after 1 ms, backing off: a handle woken by the start itself (the watch
        fires as the entry is acquired) can come in that moment, and a parent that did not
        look again waited forever on a full executor (its test sets the runner late).
        """
        stopping = self._rt.stopping
        may_run = not entry.is_async and _may_run(self._rt, entry)
        delay = _RUNNER_RECHECK if may_run else 1.0
        while True:
            if may_run and entry.runner is not None:
                may_run, delay = False, 1.0
                if entry.claim():
                    try:
                        entry.runner()
                    except BaseException:
                        pass  # the outcome is on the entry; raised like any waiter's
            if entry.done.wait(delay):
                return
            if stopping.is_set() and not entry.done.is_set():
                entry.done.wait(self._rt.config.thread_join_timeout_sec)
                if not entry.done.is_set():
                    raise DBOSRuntimeShutdownError("the runtime shut down while waiting")
            if may_run:
                delay = min(delay * 2, 1.0)

    def _poll_result(self) -> R:
        delay = self._first_delay
        watch = StartWatch()
        active = self._rt.active
        # A handle just made by an enqueue here skips the first status read: the row is
        # ENQUEUED, and a start in this process wakes the watch. Under a backlog this read
        # was one transaction per handle for nothing (11 % of the queued path's samples).
        # Only the first call: a later one may find the row finished by another process.
        # Unless an outcome was forgotten since the enqueue: then this one may have finished
        # here and left no trace but its row (an error, an evicted output), and the wait
        # would last a whole first delay (4,800 handles waited on in order: 60 wf/s).
        mark, self._enqueued_mark = self._enqueued_mark, None
        read = mark is None or mark != active.forgotten
        try:
            while True:
                # A queued workflow starts here after the handle was made: once it runs in
                # this process, wait on its outcome. The watch hands over the entry the
                # moment it is acquired (registered before the database is read, so a start
                # in between counts), and the handle keeps it even if the run has already
                # finished and left the table: no status read for a run seen starting here.
                # The database is polled, backing off, for a run in another process.
                entry = active.watch(self.workflow_id, watch)
                if entry is not None:
                    return self._outcome_of(entry)
                if read:
                    done, value = _settled(self._rt, self.workflow_id)
                    if done:
                        result: R = value
                        return result
                read = True
                if self._rt.stopping.is_set():
                    raise DBOSRuntimeShutdownError("the runtime shut down while waiting")
                if watch.started.wait(delay):
                    started = watch.entry
                    assert started is not None  # set before the event
                    return self._outcome_of(started)
                delay = min(delay * 2, _POLL_MAX)
        finally:
            active.unwatch(self.workflow_id, watch)

    def _outcome_of(self, entry: ActiveWorkflow) -> R:
        self._wait_entry(entry)
        outcome: R = entry.outcome()
        return outcome

    def get_status(self) -> WorkflowStatus:
        """The workflow's current status, with every DBOS field (a step, ``DBOS.getStatus``,
        inside a workflow)."""
        return status_step(self._rt, self.workflow_id)


def enqueued_handle(
    rt: Runtime, enqueue: Callable[[], tuple[str, bool]], *, local: bool = False
) -> WorkflowHandle[Any]:
    """The handle of the workflow ``enqueue()`` enqueues, given as (its ID, whether this call
    wrote the row). The forgotten-outcomes count is taken before the insert (see
    :meth:`WorkflowHandle._poll_result`); a row that was there already gives no mark."""
    mark = rt.active.forgotten
    workflow_id, inserted = enqueue()
    entry = rt.active.get(workflow_id)
    return WorkflowHandle(
        rt, workflow_id, entry, enqueued_mark=mark if inserted else None, local=local
    )


def status_step(rt: Runtime, workflow_id: str) -> WorkflowStatus:
    """A workflow's status, checkpointed as ``DBOS.getStatus`` inside a workflow (DBOS's
    handles and ``retrieve_workflow`` read it so); raises if it does not exist."""
    return _durable.call(rt, "DBOS.getStatus", require_status, rt, workflow_id)


class WorkflowHandleAsync(Generic[R]):
    """The async twin of :class:`WorkflowHandle`: waiting holds no thread."""

    def __init__(self, rt: Runtime, workflow_id: str, entry: ActiveWorkflow | None) -> None:
        self._rt = rt
        self._entry = entry
        self.workflow_id = workflow_id

    def get_workflow_id(self) -> str:
        """The workflow's ID."""
        return self.workflow_id

    async def get_result(self) -> R:
        """Await the workflow's result (or its error); a ``DBOS.getResult`` step inside a
        workflow."""
        if _durable.calling_workflow() is None:
            return await self._result()
        result: R = await _durable.call_async(
            self._rt, "DBOS.getResult", self._result_unrecorded, child_workflow_id=self.workflow_id
        )
        return result

    async def _result_unrecorded(self) -> R:
        with _durable.shutdown_unrecorded():
            return await self._result()

    async def _result(self) -> R:
        entry = self._entry or self._rt.active.get(self.workflow_id)
        if entry is not None:
            result: R = await wait_async(entry)
            return result
        output = self._rt.active.finished_output(self.workflow_id)
        if output is not None:
            kept: R = deserialize(output)
            return kept
        delay = _POLL_MIN
        while True:
            done, value = _settled(self._rt, self.workflow_id)
            if done:
                result_value: R = value
                return result_value
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    async def get_status(self) -> WorkflowStatus:
        """The workflow's current status, with every DBOS field."""
        return status_step(self._rt, self.workflow_id)
