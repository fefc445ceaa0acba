"""System-database operations behind the admin endpoints: steps, fork, GC, global timeout."""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

import sqlalchemy as sa

from ._db_retry import retried
from ._errors import DBOSWorkflowConflictIDError
from ._rows import CANCELLED, ENQUEUED, PENDING, TERMINAL, StepRow, now_ms
from ._schema import IDENTITY_COLUMNS
from ._schema import operation_outputs as oo
from ._schema import workflow_status as ws
from ._sysdb import SystemDatabase


@retried
def step_rows(
    sysdb: SystemDatabase, workflow_id: str, *, limit: int | None, offset: int | None
) -> list[StepRow]:
    """A workflow's recorded steps, by step ID: the one steps query (DBOS's
    ``list_workflow_steps``, the admin API, the conductor and the CLI all read it)."""
    stmt = (
        sa.select(*StepRow.columns())
        .where(oo.c.workflow_uuid == workflow_id)
        .order_by(oo.c.function_id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset is not None:
        stmt = stmt.offset(offset)
    with sysdb.transaction(read=True) as conn:
        return [StepRow.from_mapping(r._mapping) for r in conn.execute(stmt)]


@retried
def list_steps(sysdb: SystemDatabase, workflow_id: str) -> list[dict[str, Any]]:
    """A workflow's recorded steps, in order, as plain data (rows of :func:`step_rows`)."""
    out = []
    for row in step_rows(sysdb, workflow_id, limit=None, offset=None):
        codecs = sysdb.codecs
        fmt = row.serialization
        out.append(
            {
                "function_id": row.function_id,
                "function_name": row.function_name,
                "output": _text(functools.partial(codecs.decode, format=fmt), row.output),
                "error": _text(functools.partial(codecs.decode_error, format=fmt), row.error),
                "child_workflow_id": row.child_workflow_id,
                "started_at_epoch_ms": row.started_at,
                "completed_at_epoch_ms": row.completed_at,
            }
        )
    return out


def _text(fn: Any, data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return repr(fn(data))
    except Exception as exc:
        return f"<cannot deserialize: {type(exc).__name__}>"


@retried
def fork_workflow(
    sysdb: SystemDatabase,
    workflow_id: str,
    start_step: int,
    *,
    executor_id: str,
    new_workflow_id: str | None = None,
    application_version: str | None = None,
) -> str | None:
    """Copy a workflow under a new ID, keeping the steps before ``start_step``; the copy is
    PENDING so it starts from that step. Returns the new ID, or None if the source is unknown;
    raises DBOSWorkflowConflictIDError when ``new_workflow_id`` is taken."""
    new_id = new_workflow_id or str(uuid.uuid4())
    now = now_ms()
    with sysdb.transaction() as conn:
        src = conn.execute(
            sa.select(
                ws.c.name,
                ws.c.inputs,
                ws.c.serialization,
                ws.c.application_version,
                ws.c.queue_name,
                *(ws.c[name] for name in IDENTITY_COLUMNS),
            ).where(ws.c.workflow_uuid == workflow_id)
        ).one_or_none()
        if src is None:
            return None
        taken = conn.execute(
            sa.select(ws.c.workflow_uuid).where(ws.c.workflow_uuid == new_id)
        ).one_or_none()
        if taken is not None:
            # Checked here so the caller gets a clear conflict, not the database's
            # IntegrityError; a racing insert still raises that (the admin API maps it to 409).
            raise DBOSWorkflowConflictIDError(new_id)
        conn.execute(
            ws.insert().values(
                workflow_uuid=new_id,
                status=PENDING,
                name=src.name,
                inputs=src.inputs,
                serialization=src.serialization,  # the copy is read as the original was
                executor_id=executor_id,
                application_version=application_version or src.application_version,
                created_at=now,
                updated_at=now,
                recovery_attempts=0,
                started_at_epoch_ms=now,
                forked_from=workflow_id,
                # The fork runs as the same identity (its inputs carry it too).
                **{name: src._mapping[name] for name in IDENTITY_COLUMNS},
            )
        )
        # Every column of a step but its workflow's ID is copied as it is.
        copied = [c for c in oo.c if c.name != "workflow_uuid"]
        conn.execute(
            oo.insert().from_select(
                [oo.c.workflow_uuid, *copied],
                sa.select(sa.literal(new_id, sa.Text), *copied).where(
                    oo.c.workflow_uuid == workflow_id, oo.c.function_id < start_step
                ),
            )
        )
    return new_id


#: Workflows deleted per transaction by :func:`garbage_collect`: at most GC_BATCH, fewer
#: while a batch takes longer than about GC_BATCH_TARGET_SEC.
GC_BATCH = 1000
GC_BATCH_MIN = 50
GC_BATCH_TARGET_SEC = 0.02


def garbage_collect(
    sysdb: SystemDatabase,
    *,
    cutoff_epoch_ms: int | None,
    rows_threshold: int | None,
    batch_size: int = GC_BATCH,
) -> int:
    """Delete finished workflows created before the cutoff, and those outside the newest
    ``rows_threshold`` rows; running and queued workflows are never deleted.

    "Newest" orders by ``created_at`` and then by workflow ID, so rows created in the same
    millisecond are ranked too: exactly ``rows_threshold`` rows are kept, never fewer.

    In batches of ``batch_size`` workflows, each its own short transaction: one transaction
    over a million rows would hold SQLite's write lock (and PostgreSQL's row locks and WAL)
    for seconds, stalling every running workflow's checkpoints behind it. Between batches
    the writers get their turn. Returns the number of workflows deleted.
    """
    doomed = _gc_doomed(sysdb, cutoff_epoch_ms, rows_threshold)
    if doomed is None:
        return 0
    deleted = 0
    size = batch_size
    while True:
        started = time.monotonic()
        count, more = _gc_batch(sysdb, doomed, size)
        deleted += count
        if not more:
            return deleted
        # Each batch holds the write lock (SQLite) while it runs: keep it short enough
        # that a checkpoint waiting behind it is not felt, long enough to make progress.
        took = time.monotonic() - started
        # Then step aside as long: the write lock is not fair, and without a pause this
        # loop takes it again before the checkpoints queued behind it (measured on SQLite:
        # a client's p50 workflow latency 1.8 -> 67 ms during a GC). GC gets half the time.
        time.sleep(min(took, GC_BATCH_TARGET_SEC * 4))
        if took > GC_BATCH_TARGET_SEC * 2:
            size = max(min(GC_BATCH_MIN, batch_size), size // 2)
        elif took < GC_BATCH_TARGET_SEC / 2:
            size = min(batch_size, size * 2)


@retried
def _gc_doomed(
    sysdb: SystemDatabase, cutoff_epoch_ms: int | None, rows_threshold: int | None
) -> sa.ColumnElement[bool] | None:
    """Which finished rows go, fixed once before the first batch (rows created later are
    newer than any bound here, so the batches never reach them); None when none can."""
    doomed: list[sa.ColumnElement[bool]] = []
    if cutoff_epoch_ms is not None:
        doomed.append(ws.c.created_at < cutoff_epoch_ms)
    if rows_threshold is not None:
        with sysdb.transaction(read=True) as conn:
            # The newest row beyond the ones kept; it and every row ranked after it go. A
            # keyset bound (not NOT IN over the kept IDs) stays cheap for a large threshold
            # and is an index scan of rows_threshold entries, not a sort.
            edge = conn.execute(
                sa.select(ws.c.created_at, ws.c.workflow_uuid)
                .order_by(ws.c.created_at.desc(), ws.c.workflow_uuid.desc())
                .offset(rows_threshold)
                .limit(1)
            ).one_or_none()
        if edge is not None:
            doomed.append(
                sa.or_(
                    ws.c.created_at < edge.created_at,
                    sa.and_(
                        ws.c.created_at == edge.created_at,
                        ws.c.workflow_uuid <= edge.workflow_uuid,
                    ),
                )
            )
    if not doomed:
        return None
    return sa.and_(sa.or_(*doomed), ws.c.status.in_(list(TERMINAL)))


@retried
def _gc_batch(
    sysdb: SystemDatabase, doomed: sa.ColumnElement[bool], batch_size: int
) -> tuple[int, bool]:
    """Delete up to ``batch_size`` of the oldest ``doomed`` workflows: (deleted, whether
    there may be more). Idempotent, so a retried batch is safe."""
    with sysdb.transaction() as conn:
        ids = list(
            conn.execute(
                sa.select(ws.c.workflow_uuid)
                .where(doomed)
                .order_by(ws.c.created_at, ws.c.workflow_uuid)
                .limit(batch_size)
            ).scalars()
        )
        if not ids:
            return 0, False
        # The condition again, and the steps only of the rows this deleted: a workflow
        # resumed since the SELECT keeps its row and its recorded steps.
        gone = list(
            conn.execute(
                ws.delete().where(ws.c.workflow_uuid.in_(ids), doomed).returning(ws.c.workflow_uuid)
            ).scalars()
        )
        if gone:
            conn.execute(oo.delete().where(oo.c.workflow_uuid.in_(gone)))
    return len(gone), len(ids) == batch_size


@retried
def global_timeout(sysdb: SystemDatabase, cutoff_epoch_ms: int) -> list[str]:
    """Cancel every PENDING or ENQUEUED workflow created before the cutoff; returns their IDs."""
    with sysdb.transaction() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.select(ws.c.workflow_uuid).where(
                    ws.c.created_at < cutoff_epoch_ms, ws.c.status.in_([PENDING, ENQUEUED])
                )
            )
        ]
        if ids:
            conn.execute(
                ws.update()
                .where(ws.c.workflow_uuid.in_(ids), ws.c.status.in_([PENDING, ENQUEUED]))
                .values(status=CANCELLED, updated_at=now_ms())
            )
    return ids
