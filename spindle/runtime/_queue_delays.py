"""DELAYED workflows (DBOS's delayed enqueue): when they fall due, and moving their time.

A delayed workflow waits in its queue's row as DELAYED until ``delay_until_epoch_ms``; the
queue's worker asks once per polling interval whether any fell due, and promotes them to
ENQUEUED, from where the next dequeue takes them in the usual order.
"""

from __future__ import annotations

import sqlalchemy as sa

from ._db_retry import retried
from ._rows import DELAYED, ENQUEUED, now_ms
from ._schema import workflow_status as ws
from ._sysdb import SystemDatabase
from ._sysdb_hot import hot_sql


def _due(queue_name: str, now_epoch_ms: int) -> sa.ColumnElement[bool]:
    return sa.and_(
        ws.c.queue_name == queue_name,
        ws.c.status == DELAYED,
        ws.c.delay_until_epoch_ms <= now_epoch_ms,
    )


@retried
def promote_delayed(sysdb: SystemDatabase, queue_name: str, now_epoch_ms: int) -> int:
    """DELAYED workflows of the queue whose delay ran out become ENQUEUED (as DBOS's
    transition); returns how many. A cheap read first: an idle check takes no write lock."""
    if not probe_due(sysdb, queue_name, now_epoch_ms):
        return 0
    return promote_due(sysdb, queue_name, now_epoch_ms)


@retried
def promote_due(sysdb: SystemDatabase, queue_name: str, now_epoch_ms: int) -> int:
    """The write of :func:`promote_delayed`, for a caller whose read found some due."""
    with sysdb.transaction() as conn:
        return int(
            conn.execute(
                ws.update()
                .where(_due(queue_name, now_epoch_ms))
                .values(status=ENQUEUED, updated_at=now_ms())
            ).rowcount
        )


@retried
def set_delay(sysdb: SystemDatabase, workflow_id: str, delay_until_epoch_ms: int) -> str | None:
    """Move a DELAYED workflow's due time; returns its queue, or None when it is not DELAYED
    (as DBOS: only a DELAYED workflow is affected)."""
    stmt = (
        ws.update()
        .where(ws.c.workflow_uuid == workflow_id, ws.c.status == DELAYED)
        .values(delay_until_epoch_ms=delay_until_epoch_ms, updated_at=now_ms())
        .returning(ws.c.queue_name)
    )
    with sysdb.transaction() as conn:
        row = conn.execute(stmt).one_or_none()
    return None if row is None else str(row[0])


#: Hot-path SQL template (see :func:`._sysdb_hot.hot_sql`) of the question "does the queue
#: (first parameter) hold a DELAYED workflow due by the time (second)?"; the queue
#: worker's combined probe asks it too.
DUE_EXISTS = (
    "EXISTS (SELECT 1 FROM {s}workflow_status WHERE queue_name = %s"
    " AND status = 'DELAYED' AND delay_until_epoch_ms <= %s)"
)

_DUE_PROBE = {flag: hot_sql(f"SELECT {DUE_EXISTS}", is_sqlite=flag) for flag in (True, False)}


def probe_due(sysdb: SystemDatabase, queue_name: str, now_epoch_ms: int) -> bool:
    """The second question of :func:`probe` alone: does the queue hold a DELAYED workflow
    due by ``now_epoch_ms``? For a poll whose dequeue is its own first question."""
    (row,) = sysdb.hot.read(_DUE_PROBE[sysdb.sqlite], (queue_name, now_epoch_ms))
    return bool(row[0])
