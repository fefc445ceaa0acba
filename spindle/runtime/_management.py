"""The management operations, once: cancel, resume, fork and restart a workflow.

The facade (``DBOS.cancel_workflow``, ``resume_workflow``, ``fork_workflow``), the admin
API (``/workflows/{id}/cancel|resume|restart|fork``) and the conductor's handlers all call
these; each surface only parses its own input and writes its own wire format. The CLI,
which has no runtime (no live workflows to wake), calls the database layer they stand on
(``SystemDatabase.cancel_tree``/``resume``, ``_admin_db.fork_workflow``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _admin_db, _introspect_db, _introspection, _workflows
from ._errors import DBOSException, DBOSNonExistentWorkflowError
from ._rows import CANCELLED, ERROR, MAX_RECOVERY_ATTEMPTS_EXCEEDED, SUCCESS

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._sysdb import SystemDatabase

#: Finished statuses, for ``wait_first``.
_ENDED = [SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED]


def cancel(rt: Runtime, workflow_id: str, cancel_children: bool = False) -> None:
    """Cancel a workflow (and with ``cancel_children`` its unfinished descendants): each
    stops at its next step; waiters get a cancellation error."""
    if not cancel_children:
        _workflows.cancel_workflow(rt, workflow_id)
        return
    _workflows.require_exists(rt, workflow_id)
    for wf_id in rt.sysdb.cancel_tree(workflow_id):
        rt.timeouts.remove(wf_id)
        entry = rt.active.get(wf_id)
        if entry is not None:
            entry.cancel()


def resume(rt: Runtime, workflow_id: str, queue_name: str | None = None) -> None:
    """Resume a cancelled or failed workflow from its last completed step; with
    ``queue_name`` it starts from that queue, under its limits (as DBOS).

    Returns nothing: the facade records the call as a step, and a handle is no output."""
    if queue_name is not None:
        _workflows.require_exists(rt, workflow_id)
        _introspect_db.set_queue(rt.sysdb, workflow_id, queue_name)
    _workflows.resume_workflow(rt, workflow_id)


def fork_placed(
    sysdb: SystemDatabase,
    workflow_id: str,
    start_step: int,
    *,
    executor_id: str,
    new_workflow_id: str,
    application_version: str | None,
    queue_name: str | None,
    queue_partition_key: str | None,
    timeout_seconds: float | None,
    now_ms: int | None,
) -> str:
    """The database half of a fork, shared by ``DBOS.fork_workflow`` and ``DBOSClient``:
    copy the workflow and its steps before ``start_step`` under ``new_workflow_id`` and
    place the copy (its queue, its timeout; a deadline from ``now_ms`` when given)."""
    if isinstance(start_step, bool) or not isinstance(start_step, int):
        raise ValueError(f"start_step must be an integer, got {start_step!r}")
    if timeout_seconds is not None and not timeout_seconds > 0:
        raise DBOSException(
            f"Invalid workflow timeout {timeout_seconds}. Timeouts must be positive."
        )
    forked = _admin_db.fork_workflow(
        sysdb,
        workflow_id,
        start_step,
        executor_id=executor_id,
        new_workflow_id=new_workflow_id,
        application_version=application_version,
    )
    if forked is None:
        raise DBOSNonExistentWorkflowError(workflow_id)
    timeout_ms = int(timeout_seconds * 1000) if timeout_seconds is not None else None
    _introspect_db.place_fork(
        sysdb,
        forked,
        queue_name=queue_name,
        queue_partition_key=queue_partition_key,
        timeout_ms=timeout_ms,
        deadline_epoch_ms=(
            now_ms + timeout_ms if timeout_ms is not None and now_ms is not None else None
        ),
    )
    return forked


def check_handles(handles: Sequence[Any]) -> list[str]:
    """The workflow IDs of ``wait_first``'s handles (DBOS's checks: some, no duplicate)."""
    if not handles:
        raise ValueError("handles must not be empty")
    ids = [h.workflow_id for h in handles]
    if len(set(ids)) != len(ids):
        raise ValueError("handles must not contain duplicate workflow IDs")
    return ids


def first_ended(sysdb: SystemDatabase, ids: list[str]) -> str | None:
    """Of ``ids``, the workflow that ended first (success, error, cancelled), or None."""
    found = _introspection.list_workflows_in(
        sysdb, {"workflow_ids": ids, "status": _ENDED, "load_input": False, "load_output": False}
    )
    # The earliest to finish, as DBOS returns the first handle to complete.
    return min(found, key=lambda s: s.updated_at).workflow_id if found else None


def fork(
    rt: Runtime,
    workflow_id: str,
    start_step: int,
    *,
    new_workflow_id: str | None = None,
    application_version: str | None = None,
    queue_name: str | None = None,
    queue_partition_key: str | None = None,
    timeout_seconds: float | None = None,
) -> str:
    """Copy a workflow under a new ID that replays the steps before ``start_step`` and runs
    the rest again; returns the new ID.

    The copy keeps the original's application version unless one is given; it runs here
    when that is this process's version, waits PENDING for a process of its version
    otherwise, and starts from ``queue_name`` when given.
    """
    rt.require_launched()
    forked = fork_placed(
        rt.sysdb,
        workflow_id,
        start_step,
        executor_id=rt.config.executor_id,
        new_workflow_id=new_workflow_id or str(uuid.uuid4()),
        application_version=application_version,
        queue_name=queue_name,
        queue_partition_key=queue_partition_key,
        timeout_seconds=timeout_seconds,
        now_ms=int(rt.clock.now() * 1000),
    )
    row = rt.sysdb.get_status(forked)
    version = row.application_version if row is not None else None
    if queue_name is not None:
        rt.queues.wake(queue_name)
    elif version is None or version == rt.config.application_version:
        _workflows.restart(rt, forked, count_attempt=False)
    # Else it waits PENDING for a process of its version (recovery of this executor's).
    return forked


def restart(rt: Runtime, workflow_id: str) -> str:
    """Run a workflow again from its first step under a new ID (DBOS's restart: a fork
    from step 1); returns the new ID."""
    return fork(rt, workflow_id, 1)
