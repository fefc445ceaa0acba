"""Starting, finding, listing, cancelling, resuming and recovering workflows.

The operations behind ``DBOS.start_workflow`` and its neighbours, as functions of the
``Runtime``: the facade, the admin API, the queue manager and the pollers all call these,
so each rule (a queued workflow resumes into its queue, a dead letter is not recovered, ...)
is written once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from . import _durable, _introspection, _recovery
from ._active import ActiveWorkflow
from ._classes import call_args, check_resolvable
from ._core import Start, prepare_workflow
from ._errors import (
    DBOSException,
    DBOSMaxRecoveryAttemptsExceededError,
    DBOSNonExistentWorkflowError,
    DBOSWorkflowFunctionNotFoundError,
)
from ._functions import GLOBAL_REGISTRY, WorkflowInfo, function_name
from ._handles import WorkflowHandle, WorkflowHandleAsync, status_step
from ._queue import check_no_enqueue_options
from ._queue_db import requeue_resumed
from ._roles import guard
from ._roles import stored as stored_auth
from ._rows import PENDING
from ._runtime import Runtime
from ._status import WorkflowStatus

logger = logging.getLogger("spindle")


def workflow_info(func: Callable[..., Any]) -> WorkflowInfo:
    """The registration of a ``@DBOS.workflow()`` function (raises for anything else)."""
    info = getattr(func, "__spindle_workflow__", None)
    if not isinstance(info, WorkflowInfo):
        raise DBOSException(f"{function_name(func)} is not a @DBOS.workflow()")
    return info


def dispatch(rt: Runtime, info: WorkflowInfo, start: Start) -> None:
    """Run a prepared workflow in the background: async ones on the loop, others on the
    executor (nothing to do when it already ran or runs elsewhere)."""
    if start.run is None:
        return
    if info.is_async:
        rt.loop.submit(start.run())
    else:
        rt.executor.submit(start.entry.run_if_unclaimed)


def handle(rt: Runtime, workflow_id: str) -> WorkflowHandle[Any]:
    """A handle to ``workflow_id``, tied to its in-process run when there is one."""
    return WorkflowHandle(rt, workflow_id, rt.active.get(workflow_id))


def start_workflow(
    rt: Runtime, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> WorkflowHandle[Any]:
    """Start a workflow in the background and return its handle at once."""
    check_no_enqueue_options()
    info = workflow_info(func)
    args = call_args(func, args)
    with guard(func):
        start = prepare_workflow(rt, info, args, stored_auth(kwargs))
    dispatch(rt, info, start)
    return WorkflowHandle(rt, start.entry.workflow_id, start.entry)


def start_workflow_async(
    rt: Runtime, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> WorkflowHandleAsync[Any]:
    """Start a workflow from async code: an async workflow runs on the caller's loop."""
    check_no_enqueue_options()
    info = workflow_info(func)
    args = call_args(func, args)
    with guard(func):
        start = prepare_workflow(rt, info, args, stored_auth(kwargs))
    if start.run is not None:
        if info.is_async:
            coro = cast(Callable[[], Coroutine[Any, Any, Any]], start.run)()
            task = asyncio.get_running_loop().create_task(coro)
            rt.background_tasks.add(task)
            task.add_done_callback(rt.background_tasks.discard)
        else:
            rt.executor.submit(start.entry.run_if_unclaimed)
    return WorkflowHandleAsync(rt, start.entry.workflow_id, start.entry)


def require_exists(rt: Runtime, workflow_id: str) -> None:
    """Raise ``DBOSNonExistentWorkflowError`` unless the workflow has a status row."""
    rt.require_launched()
    if rt.sysdb.get_status(workflow_id) is None:
        raise DBOSNonExistentWorkflowError(workflow_id)


def require_retrievable(rt: Runtime, workflow_id: str) -> None:
    """``retrieve_workflow``'s check: inside a workflow a ``DBOS.getStatus`` step, as DBOS
    records it; elsewhere one status read."""
    if _durable.calling_workflow() is None:
        require_exists(rt, workflow_id)
    else:
        rt.require_launched()
        status_step(rt, workflow_id)


def get_workflow_status(rt: Runtime, workflow_id: str) -> WorkflowStatus | None:
    """The status of a workflow (every DBOS field), or None."""
    return _introspection.workflow_status(rt, workflow_id)


def list_workflows(
    rt: Runtime,
    *,
    workflow_ids: list[str] | None = None,
    status: str | list[str] | None = None,
    start_time: str | None = None,
    end_time: str | None = None,
    name: str | None = None,
    queue_name: str | list[str] | None = None,
    limit: int | None = None,
    offset: int | None = None,
    sort_desc: bool = False,
    load_input: bool = True,
    queues_only: bool = False,
) -> list[WorkflowStatus]:
    """Workflows matching the filters (times as ISO 8601 strings), oldest first; the admin
    API's reading of DBOS's filters (``_introspection`` has them all)."""
    given: dict[str, Any] = {
        "workflow_ids": workflow_ids,
        "status": status,
        "start_time": start_time,
        "end_time": end_time,
        "name": name,
        "queue_name": queue_name,
        "limit": limit,
        "offset": offset,
        "sort_desc": sort_desc,
        "load_input": load_input,
    }
    return _introspection.list_workflows(rt, given, queues_only=queues_only)


def cancel_workflow(rt: Runtime, workflow_id: str) -> None:
    """Cancel a workflow: it stops at its next step; waiters get a cancellation error."""
    require_exists(rt, workflow_id)
    rt.sysdb.cancel(workflow_id)
    rt.timeouts.remove(workflow_id)
    entry = rt.active.get(workflow_id)
    if entry is not None:
        entry.cancel()


def on_deadline(rt: Runtime, workflow_id: str) -> None:
    """The timeout enforcer's callback: cancel the workflow and its descendants."""
    if rt.interrupting:
        return
    for wf_id in rt.sysdb.cancel_tree(workflow_id):
        rt.timeouts.remove(wf_id)
        entry = rt.active.get(wf_id)
        if entry is not None:
            entry.cancel()


def resume_workflow(rt: Runtime, workflow_id: str) -> WorkflowHandle[Any]:
    """Resume a cancelled or failed workflow from its last completed step.

    A workflow of a queue goes back to that queue (ENQUEUED) and starts when the queue's
    limits allow; any other restarts here at once.
    """
    rt.require_launched()
    active: ActiveWorkflow | None = rt.active.get(workflow_id)
    if active is not None and not active.done.is_set():
        return WorkflowHandle(rt, workflow_id, active)
    if active is not None:
        # A cancelled entry lingers until its body reaches a boundary; wait for it.
        rt.active.release(active)
    queue_name = requeue_resumed(rt.sysdb, workflow_id)
    if queue_name is not None:
        # A queued workflow goes back to its queue, under the queue's limits (as DBOS).
        rt.queues.wake(queue_name)
        return handle(rt, workflow_id)
    row = rt.sysdb.resume(workflow_id, rt.config.executor_id)
    if row is None:
        raise DBOSNonExistentWorkflowError(workflow_id)
    return restart(rt, workflow_id, count_attempt=False)


def restart(rt: Runtime, wf_id: str, *, count_attempt: bool) -> WorkflowHandle[Any]:
    """Run a stored workflow again from its recorded steps (recovery, resume)."""
    row = rt.sysdb.get_status(wf_id)
    if row is None:
        raise DBOSNonExistentWorkflowError(wf_id)
    info = GLOBAL_REGISTRY.workflow(row.name)
    if info is None:
        raise DBOSWorkflowFunctionNotFoundError(
            wf_id, f"{row.name} is not a workflow this process registered"
        )
    if count_attempt and row.status == PENDING:
        limit = info.max_recovery_attempts
        if limit is not None and row.recovery_attempts >= limit:
            # A workflow that keeps crashing its process stops being retried: a dead
            # letter the operator can inspect and resume.
            rt.sysdb.exceed_recovery(wf_id)
            raise DBOSMaxRecoveryAttemptsExceededError(wf_id, limit)
        rt.sysdb.claim_for_recovery(wf_id, rt.config.executor_id)
    _, args, kwargs = rt.sysdb.codecs.read_inputs(info.func, row.inputs, row.serialization)
    check_resolvable(wf_id, args)  # an unregistered instance: not run, stays PENDING
    start = prepare_workflow(rt, info, tuple(args), dict(kwargs), workflow_id=wf_id)
    dispatch(rt, info, start)
    return WorkflowHandle(rt, wf_id, start.entry)


def recover_pending(rt: Runtime, executor_ids: Sequence[str]) -> list[WorkflowHandle[Any]]:
    """Restart the PENDING workflows the given executors owned (of this app version), in
    batches of a few queries each (:mod:`._recovery`)."""
    return _recovery.recover_pending(rt, executor_ids)
