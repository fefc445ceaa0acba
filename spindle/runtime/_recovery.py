"""Recovery of PENDING workflows, in batches: a few queries per batch, none per workflow.

A process that restarts after a crash may own thousands of PENDING workflows. Restarting
them one by one (read the row, count the attempt, insert-or-read, read the steps: four round
trips each) made ``launch()`` take seconds per thousand. Here a batch of IDs costs three
statements whatever its size: the status rows, one ``UPDATE ... RETURNING`` that counts the
attempt of every workflow still PENDING, and the recorded steps of those claimed.

At launch only the list of IDs is read before ``launch()`` returns (one query); the batches
run on a supervised thread (``dbos-recovery``, kind ``poller``: like a poller it starts
workflows, and shutdown stops it first), visible in the thread registry while it works.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from spindle.diagnostics import ThreadGroup, ThreadKind

from ._classes import check_resolvable
from ._core import start_dequeued
from ._db_retry import retried
from ._errors import DBOSMaxRecoveryAttemptsExceededError, DBOSRuntimeShutdownError
from ._functions import GLOBAL_REGISTRY, WorkflowInfo
from ._handles import WorkflowHandle
from ._rows import MAX_RECOVERY_ATTEMPTS_EXCEEDED, PENDING, StatusRow, StepRow, now_ms
from ._runtime import Runtime
from ._schema import operation_outputs as oo
from ._schema import workflow_status as ws
from ._sysdb import SystemDatabase

logger = logging.getLogger("spindle")

#: Workflows per batch: three statements each, and few enough bound parameters for SQLite.
BATCH_SIZE = 500
#: The supervised thread's name (the tests and the dashboard find it by this).
THREAD_NAME = "dbos-recovery"


def _status_row(r: Any) -> StatusRow:
    return StatusRow.from_mapping(r._mapping)


@retried
def _pending_rows(sysdb: SystemDatabase, ids: Sequence[str]) -> list[StatusRow]:
    stmt = sa.select(*StatusRow.columns()).where(
        ws.c.workflow_uuid.in_(list(ids)), ws.c.status == PENDING
    )
    with sysdb.transaction(read=True) as conn:
        rows = {row.workflow_id: row for row in map(_status_row, conn.execute(stmt))}
    # Oldest first, as the IDs were listed.
    return [rows[i] for i in ids if i in rows]


@retried
def _claim(sysdb: SystemDatabase, ids: Sequence[str], executor_id: str) -> set[str]:
    """Count a recovery attempt on each workflow still PENDING; returns those claimed."""
    stmt = (
        ws.update()
        .where(ws.c.workflow_uuid.in_(list(ids)), ws.c.status == PENDING)
        .values(
            recovery_attempts=ws.c.recovery_attempts + 1,
            executor_id=executor_id,
            updated_at=now_ms(),
        )
        .returning(ws.c.workflow_uuid)
    )
    with sysdb.transaction() as conn:
        return {r[0] for r in conn.execute(stmt)}


@retried
def _exceed(sysdb: SystemDatabase, ids: Sequence[str]) -> None:
    """Move PENDING workflows to MAX_RECOVERY_ATTEMPTS_EXCEEDED (dead letters)."""
    stmt = (
        ws.update()
        .where(ws.c.workflow_uuid.in_(list(ids)), ws.c.status == PENDING)
        .values(status=MAX_RECOVERY_ATTEMPTS_EXCEEDED, updated_at=now_ms())
    )
    with sysdb.transaction() as conn:
        conn.execute(stmt)


@retried
def _steps(sysdb: SystemDatabase, ids: Sequence[str]) -> dict[str, dict[int, StepRow]]:
    stmt = sa.select(oo.c.workflow_uuid, *StepRow.columns()).where(
        oo.c.workflow_uuid.in_(list(ids))
    )
    out: dict[str, dict[int, StepRow]] = {i: {} for i in ids}
    with sysdb.transaction(read=True) as conn:
        for r in conn.execute(stmt):
            step = StepRow.from_mapping(r._mapping)
            out[r.workflow_uuid][step.function_id] = step
    return out


def recover_batch(rt: Runtime, ids: Sequence[str]) -> list[WorkflowHandle[Any]]:
    """Restart the PENDING workflows among ``ids`` here; returns their handles.

    A workflow whose function this process has not registered is left PENDING (a process
    that has it recovers it); one past its ``max_recovery_attempts`` becomes a dead letter.
    """
    runnable: list[tuple[StatusRow, WorkflowInfo]] = []
    dead: list[str] = []
    for row in _pending_rows(rt.sysdb, ids):
        info = GLOBAL_REGISTRY.workflow(row.name)
        if info is None:
            logger.warning(
                "spindle: cannot recover %s: it runs %r, which this process has not registered",
                row.workflow_id,
                row.name,
            )
            continue
        limit = info.max_recovery_attempts
        if limit is not None and row.recovery_attempts >= limit:
            dead.append(row.workflow_id)
            error = DBOSMaxRecoveryAttemptsExceededError(row.workflow_id, limit)
            logger.warning("spindle: cannot recover %s: %s", row.workflow_id, error)
            continue
        runnable.append((row, info))
    if dead:
        _exceed(rt.sysdb, dead)
    if not runnable:
        return []
    # Only what this UPDATE claimed runs: a row that finished or was cancelled since the
    # read above is no longer PENDING and is left alone.
    claimed = _claim(rt.sysdb, [row.workflow_id for row, _ in runnable], rt.config.executor_id)
    steps = _steps(rt.sysdb, [row.workflow_id for row, _ in runnable if row.workflow_id in claimed])
    handles: list[WorkflowHandle[Any]] = []
    for row, info in runnable:
        wf_id = row.workflow_id
        if wf_id not in claimed:
            continue
        try:
            codec, args, kwargs = rt.sysdb.codecs.read_inputs(
                info.func, row.inputs, row.serialization
            )
            # A method of a class instance this process never registered: not run, it
            # stays PENDING for a process that has it (DBOS's not-found error, logged).
            check_resolvable(wf_id, args)
        except Exception as exc:  # one unreadable row must not stop the others
            logger.warning("spindle: cannot recover %s: %s", wf_id, exc)
            continue
        start = start_dequeued(
            rt,
            info,
            wf_id,
            tuple(args),
            dict(kwargs),
            deadline_ms=row.workflow_deadline_epoch_ms,
            recorded=steps[wf_id],
            codec=codec,
        )
        if start.run is not None:
            try:
                if info.is_async:
                    rt.loop.submit(start.run())
                else:
                    rt.executor.submit(start.entry.run_if_unclaimed)
            except RuntimeError:
                # The executor or loop is shutting down: it stays PENDING for next time.
                start.entry.finish(
                    error=DBOSRuntimeShutdownError(
                        f"the runtime shut down; workflow {wf_id!r} stays PENDING"
                    )
                )
                rt.timeouts.remove(wf_id)
                rt.active.release(start.entry)
                return handles
        handles.append(WorkflowHandle(rt, wf_id, start.entry))
    return handles


def _batches(ids: Sequence[str], size: int) -> list[Sequence[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def recover_pending(
    rt: Runtime, executor_ids: Sequence[str], *, batch_size: int = BATCH_SIZE
) -> list[WorkflowHandle[Any]]:
    """Restart the PENDING workflows the given executors owned (of this app version), now."""
    ids = rt.sysdb.pending_workflow_ids(executor_ids, rt.config.application_version)
    handles: list[WorkflowHandle[Any]] = []
    for batch in _batches(ids, batch_size):
        handles.extend(recover_batch(rt, batch))
    return handles


def recover_in_background(
    rt: Runtime, executor_ids: Sequence[str], *, batch_size: int = BATCH_SIZE
) -> threading.Event | None:
    """Recover at launch: list the IDs now, restart them in batches on a supervised thread.

    The list is read before this returns, so that a workflow a queue worker dequeues
    afterwards (PENDING, this executor's) is never taken for one to recover. Returns an
    event set when the last batch was dispatched (or the thread stopped), or None when
    there was nothing to recover.
    """
    ids = rt.sysdb.pending_workflow_ids(executor_ids, rt.config.application_version)
    if not ids:
        return None
    finished = threading.Event()
    batches = _batches(ids, batch_size)

    def body(stop: threading.Event) -> None:
        try:
            for batch in batches:
                # Between batches: shutdown stops this thread with the pollers, before the
                # executor it feeds; a workflow not dispatched stays PENDING for next time.
                if stop.is_set():
                    return
                recover_batch(rt, batch)
        finally:
            finished.set()

    rt.supervisor.spawn(ThreadKind.POLLER, THREAD_NAME, body, group=ThreadGroup.POLLER)
    return finished
