"""The queues' SQL: enqueue, dequeue under the queue's limits, and re-enqueue on recovery.

Kept apart from ``_sysdb.py`` (one concept per module); it runs through the same close gate
(``sysdb.transaction()`` and the hot path, ``sysdb.hot``), so shutdown interrupts and drains
these queries like any other.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypedDict

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ._db_retry import retried
from ._errors import DBOSQueueDeduplicatedError
from ._queue_delays import DUE_EXISTS
from ._rows import ENQUEUED, PENDING, SUCCESS, StatusRow, TableRow, now_ms
from ._schema import ENQUEUE_SEQUENCE, IDENTITY_COLUMNS, SCHEMA
from ._schema import workflow_status as ws
from ._sysdb import SystemDatabase, this_version
from ._sysdb_hot import HotInsert, hot_sql


class RateLimit(TypedDict):
    """At most ``limit`` starts in any ``period`` seconds (as ``_queue.QueueRateLimit``)."""

    limit: int
    period: float


class Queue(Protocol):
    """What the queries read of a queue: a ``_queue.Queue`` is one. A protocol, not an
    import: the database layer imports nothing of the runtime above it."""

    @property
    def name(self) -> str: ...
    @property
    def concurrency(self) -> int | None: ...
    @property
    def worker_concurrency(self) -> int | None: ...
    @property
    def limiter(self) -> RateLimit | None: ...
    @property
    def priority_enabled(self) -> bool: ...
    @property
    def partition_queue(self) -> bool: ...


#: First key of the PostgreSQL advisory lock that serialises dequeues of one queue.
_ADVISORY_CLASS = 5357495


@dataclass(frozen=True, slots=True)
class Dequeued(TableRow):
    """A workflow a worker just set PENDING for this executor: what it needs to start it."""

    TABLE: ClassVar[sa.Table] = ws
    RENAMED: ClassVar[Mapping[str, str]] = {
        "workflow_id": "workflow_uuid",
        "deadline_epoch_ms": "workflow_deadline_epoch_ms",
    }

    workflow_id: str
    name: str
    inputs: bytes | None
    deadline_epoch_ms: int | None
    recovery_attempts: int
    serialization: str | None


Dequeued.check()


@dataclass(frozen=True, slots=True)
class DequeueResult:
    """The rows started now, and when a rate-limited queue may start more (seconds)."""

    rows: list[Dequeued]
    retry_after: float | None = None


def advisory_key(queue_name: str) -> int:
    """The second key of a queue's advisory lock (a stable int4 from its name)."""
    return zlib.crc32(queue_name.encode()) - 2**31


def _insert_enqueued(*, is_sqlite: bool, delayed: bool, identified: bool) -> HotInsert:
    # FIFO among same-millisecond enqueues: SQLite numbers rows by rowid already, and
    # PostgreSQL takes the next value of the enqueue sequence.
    literals = {"status": "'DELAYED'" if delayed else "'ENQUEUED'", "recovery_attempts": "0"}
    delay = ("delay_until_epoch_ms",) if delayed else ()
    identity = IDENTITY_COLUMNS if identified else ()
    if not is_sqlite:
        literals["enqueue_seq"] = f"nextval('{SCHEMA}.{ENQUEUE_SEQUENCE}')"
    return HotInsert(
        ws,
        (
            "workflow_uuid",
            "name",
            "inputs",
            "executor_id",
            "application_version",
            "created_at",
            "updated_at",
            "parent_workflow_id",
            "workflow_timeout_ms",
            "workflow_deadline_epoch_ms",
            "queue_name",
            "deduplication_id",
            "priority",
            "queue_partition_key",
            "serialization",
            *delay,
            *identity,
        ),
        is_sqlite=is_sqlite,
        literals=literals,
        # Only an ID conflict means "already enqueued": a deduplication conflict raises.
        suffix=" ON CONFLICT (workflow_uuid) DO NOTHING",
    )


# Prepared once per backend: enqueue is a serial loop in many apps, and it runs on the
# system database's hot path (on SQLite, in the group commit with the steps' checkpoints).
# A delayed enqueue (rare) inserts the DELAYED row in the same one statement, and one with a
# class binding or an identity its identity columns: keyed (sqlite, delayed, identified).
_INSERTS = {
    (sqlite, delayed, identified): _insert_enqueued(
        is_sqlite=sqlite, delayed=delayed, identified=identified
    )
    for sqlite in (True, False)
    for delayed in (True, False)
    for identified in (True, False)
}


def _enqueue_order(*, is_sqlite: bool) -> str:
    """The column that orders same-millisecond enqueues (rowid, or the sequence)."""
    return "rowid" if is_sqlite else "enqueue_seq"


def insert_enqueued(
    sysdb: SystemDatabase,
    *,
    workflow_id: str,
    name: str,
    inputs: bytes,
    queue_name: str,
    executor_id: str,
    application_version: str | None,
    parent_workflow_id: str | None,
    timeout_ms: int | None,
    deadline_epoch_ms: int | None,
    deduplication_id: str | None,
    priority: int,
    queue_partition_key: str | None = None,
    delay_until_epoch_ms: int | None = None,
    identity: Mapping[str, Any] | None = None,
    serialization: str | None = None,
) -> StatusRow | None:
    """Insert an ENQUEUED workflow (DELAYED until ``delay_until_epoch_ms`` when given, with
    its identity columns when given); None when inserted, or the row already under this ID.

    Raises :class:`DBOSQueueDeduplicatedError` when another ENQUEUED or PENDING workflow of
    the queue holds ``deduplication_id`` (the partial unique index of migration v3).
    """
    now = now_ms()
    delayed = delay_until_epoch_ms is not None
    insert = _INSERTS[sysdb.sqlite, delayed, identity is not None]
    values: dict[str, Any] = {
        "workflow_uuid": workflow_id,
        "name": name,
        "inputs": inputs,
        "executor_id": executor_id,
        "application_version": application_version,
        "created_at": now,
        "updated_at": now,
        "parent_workflow_id": parent_workflow_id,
        "workflow_timeout_ms": timeout_ms,
        "workflow_deadline_epoch_ms": deadline_epoch_ms,
        "queue_name": queue_name,
        "deduplication_id": deduplication_id,
        "priority": priority,
        "queue_partition_key": queue_partition_key,
        "serialization": serialization,
    }
    if delayed:
        values["delay_until_epoch_ms"] = delay_until_epoch_ms
    if identity is not None:
        values.update(identity)
    try:
        return sysdb.insert_or_existing(insert.sql, insert.params(values), values)
    except IntegrityError as exc:
        if deduplication_id is None:
            raise
        raise DBOSQueueDeduplicatedError(workflow_id, queue_name, deduplication_id) from exc


_DEQUEUE_UNLIMITED = (
    # Materialized: the candidates are chosen once. As a plain IN (subquery), PostgreSQL
    # may run the subquery again per row it updates, and its LIMIT then let one dequeue
    # take every queued row (measured: 4 taken of a limit of 2).
    "WITH picked AS MATERIALIZED (SELECT workflow_uuid AS picked_id FROM {s}workflow_status"
    " WHERE queue_name = %s AND status = 'ENQUEUED'"
    " AND (application_version = %s OR application_version IS NULL)"
    " ORDER BY {order} LIMIT %s{lock})"
    " UPDATE {s}workflow_status SET status = 'PENDING', executor_id = %s,"
    " started_at_epoch_ms = %s, updated_at = %s,"
    # A queued workflow's timeout runs from its start, not from its enqueue (as DBOS).
    " workflow_deadline_epoch_ms = CASE WHEN workflow_deadline_epoch_ms IS NULL"
    " AND workflow_timeout_ms IS NOT NULL THEN %s{cast} + workflow_timeout_ms"
    " ELSE workflow_deadline_epoch_ms END{from}"
    " WHERE {picked_rows}"
    " RETURNING {returning}"
)


def _sort_keys(*, is_sqlite: bool) -> tuple[str, str, str]:
    """What the one-statement dequeue returns after a :class:`Dequeued`: its sort keys."""
    return ("priority", "created_at", _enqueue_order(is_sqlite=is_sqlite))


def _dequeue_sql(*, is_sqlite: bool, priority: bool) -> str:
    # Both halves hold whatever the planner's statistics say (they are stale whenever
    # the backlog grew since the last ANALYZE, which saw few ENQUEUED rows). The order is
    # idx_ws_queue_order's own, so the index scan stops after the limit: with
    # workflow_uuid as a last key, PostgreSQL sorted the whole backlog on every dequeue.
    # The update finds its rows by primary key alone: from IN (SELECT ...) it hash-joined
    # a bitmap scan of every ENQUEUED row, and from a status test next to the key it
    # walked idx_ws_status_executor's ENQUEUED entries (seen with auto_explain under
    # bench_scale's queued load: 4-8 ms a dequeue at a backlog of 600 rows). The rows are
    # ENQUEUED: the lock re-checked that, and holds them. SQLite serialises dequeues with
    # its write lock, takes no row lock, and keeps the test.
    # Equal (created_at, sequence) pairs are left to SQLite's rowid, and on PostgreSQL
    # only rows written without the sequence share one.
    seq = _enqueue_order(is_sqlite=is_sqlite)
    order = f"created_at, {seq}"
    template = _DEQUEUE_UNLIMITED.replace("{order}", f"priority, {order}" if priority else order)
    template = template.replace("{lock}", "" if is_sqlite else " FOR UPDATE SKIP LOCKED")
    template = template.replace("{from}", "" if is_sqlite else " FROM picked")
    template = template.replace(
        "{picked_rows}",
        "status = 'ENQUEUED' AND workflow_uuid IN (SELECT picked_id FROM picked)"
        if is_sqlite
        else "workflow_uuid = picked.picked_id",
    )
    returning = ", ".join((Dequeued.sql_list(), *_sort_keys(is_sqlite=is_sqlite)))
    template = template.replace("{returning}", returning)
    return hot_sql(template, is_sqlite=is_sqlite, casts=("bigint",))


# By (SQLite?, priority enabled?): one statement, prepared once.
_DEQUEUES = {
    (flag, prio): _dequeue_sql(is_sqlite=flag, priority=prio)
    for flag in (True, False)
    for prio in (True, False)
}


def _dequeue_unlimited(
    sysdb: SystemDatabase,
    queue: Queue,
    *,
    executor_id: str,
    application_version: str,
    max_rows: int,
    deadline_base: int,
) -> DequeueResult:
    """A queue without limits needs no counts: its dequeue is one ``UPDATE ... RETURNING``
    on the hot path (on SQLite, in the group commit with the checkpoints; on PostgreSQL,
    the candidates taken ``FOR UPDATE SKIP LOCKED`` in the subquery)."""
    now = now_ms()
    params = (queue.name, application_version, max_rows, executor_id, now, now, deadline_base)
    failures = sysdb.retrier.failures
    returned = sysdb.hot.write_returning(_DEQUEUES[sysdb.sqlite, queue.priority_enabled], params)
    if sysdb.retrier.failures != failures:
        # A transient failure met meanwhile, maybe this dequeue's: an attempt whose commit
        # landed but whose answer was lost set rows PENDING that the retry did not return.
        # They carry this dequeue's executor and start time; without this they would wait
        # for the next launch's recovery. (Starting one twice is harmless: the in-flight
        # table lets one start run it.)
        returned = _with_landed(sysdb, queue.name, executor_id, now, returned)
    # Driver rows are tuples: named once, by the list the RETURNING clause was built from.
    sort_keys = _sort_keys(is_sqlite=sysdb.sqlite)
    names = (*Dequeued.field_names(), *sort_keys)
    rows = [dict(zip(names, r, strict=True)) for r in returned]
    seq = sort_keys[-1]

    # RETURNING gives no order: start them in dequeue (priority, FIFO) order (a NULL
    # sequence sorts last, as in PostgreSQL's ORDER BY).
    def fifo(r: dict[str, Any]) -> tuple[Any, ...]:
        key = (r["created_at"], r[seq] is None, r[seq] or 0, r["workflow_id"])
        return (r["priority"], *key) if queue.priority_enabled else key

    rows.sort(key=fifo)
    return DequeueResult([Dequeued.from_mapping(r) for r in rows])


_LANDED = {
    flag: hot_sql(
        "SELECT "
        + ", ".join((Dequeued.sql_list(), *_sort_keys(is_sqlite=flag)))
        + " FROM {s}workflow_status WHERE queue_name = %s AND status = 'PENDING'"
        " AND executor_id = %s AND started_at_epoch_ms = %s",
        is_sqlite=flag,
    )
    for flag in (True, False)
}


@retried
def _with_landed(
    sysdb: SystemDatabase, queue_name: str, executor_id: str, now: int, returned: list[Any]
) -> list[Any]:
    """``returned`` plus the rows a lost attempt of the same dequeue took (see the caller)."""
    with sysdb.transaction(read=True) as conn:
        landed = conn.exec_driver_sql(_LANDED[sysdb.sqlite], (queue_name, executor_id, now))
        rows = [tuple(r) for r in landed]
    seen = {r[0] for r in returned}
    return list(returned) + [r for r in rows if r[0] not in seen]


@retried
def has_enqueued(sysdb: SystemDatabase, queue_name: str, application_version: str) -> bool:
    """A cheap read: does the queue hold an ENQUEUED workflow this process may start?
    (Idle polls take no lock.)"""
    stmt = sa.select(
        sa.exists().where(
            ws.c.queue_name == queue_name,
            ws.c.status == ENQUEUED,
            this_version(application_version),
        )
    )
    with sysdb.transaction(read=True) as conn:
        return bool(conn.execute(stmt).scalar())


# A worker's poll asks both questions in one read (the idle poll's only statement), as
# driver SQL prepared once: it runs every polling interval, and building and compiling
# the Core statement cost more CPU than the query (two of them were 1 in 12 of the
# queued path's samples). Both searches use idx_ws_queue_order (queue_name, status, ...).
_PROBE = {
    flag: hot_sql(
        "SELECT EXISTS (SELECT 1 FROM {s}workflow_status WHERE queue_name = %s"
        " AND status = 'ENQUEUED' AND (application_version = %s OR application_version IS NULL)),"
        f" {DUE_EXISTS}",
        is_sqlite=flag,
    )
    for flag in (True, False)
}


def probe(
    sysdb: SystemDatabase, queue_name: str, application_version: str, now_epoch_ms: int
) -> tuple[bool, bool]:
    """One read: (the queue holds an ENQUEUED workflow this process may start, it holds a
    DELAYED workflow due by ``now_epoch_ms``). Takes no lock.

    On the hot path's parked connections (retried there): a ``Connection`` around it cost
    a checkout, a ``BEGIN`` and a reset per poll, more CPU than the query.
    """
    params = (queue_name, application_version, queue_name, now_epoch_ms)
    (row,) = sysdb.hot.read(_PROBE[sysdb.sqlite], params)
    return bool(row[0]), bool(row[1])


def unlimited(queue: Queue) -> bool:
    """Whether the queue has none of the limits a dequeue must count for."""
    return queue.concurrency is None and queue.limiter is None and queue.worker_concurrency is None


def dequeue(
    sysdb: SystemDatabase,
    queue: Queue,
    *,
    executor_id: str,
    application_version: str,
    max_rows: int,
    clock_ms: Callable[[], int],
) -> DequeueResult:
    """Set up to ``max_rows`` ENQUEUED workflows of ``queue`` PENDING for ``executor_id``,
    as far as the queue's limits allow, in one transaction.

    Only workflows of ``application_version`` (or of none) are taken, as DBOS does; the
    limits count every workflow of the queue, whatever its version.

    Several processes never start the same workflow: on PostgreSQL the candidate rows are
    taken ``FOR UPDATE SKIP LOCKED``; on SQLite the transaction is ``BEGIN IMMEDIATE``, so
    dequeues are serialised. A global limit (``concurrency``, ``limiter``) also needs the
    counts to be exact across processes: on PostgreSQL a per-queue advisory transaction lock
    serialises the dequeues of that queue, and each count then sees every committed start
    (READ COMMITTED reads a fresh snapshot per statement).

    A queue with none of those limits needs no counts: its dequeue is one statement on
    the system database's hot path (:func:`_dequeue_unlimited`). A partitioned queue's
    limits hold for each partition: one counted transaction per partition with work.

    ``clock_ms`` reads the runtime's clock, the base of a queued workflow's deadline.
    """
    if max_rows <= 0:
        return DequeueResult([])
    if unlimited(queue):
        return _dequeue_unlimited(
            sysdb,
            queue,
            executor_id=executor_id,
            application_version=application_version,
            max_rows=max_rows,
            deadline_base=clock_ms(),
        )
    if not queue.partition_queue:
        return _dequeue_counted(
            sysdb,
            queue,
            None,
            executor_id=executor_id,
            application_version=application_version,
            max_rows=max_rows,
            clock_ms=clock_ms,
        )
    # Partitioned: the limits hold per partition, so each partition with queued work gets
    # its own counted transaction, the longest-waiting partition first (as DBOS sweeps
    # them one at a time), until this process's free slots are used.
    rows: list[Dequeued] = []
    retry_after: float | None = None
    for key in _partitions_with_work(sysdb, queue.name, application_version):
        if len(rows) >= max_rows:
            break
        part = _dequeue_counted(
            sysdb,
            queue,
            key,
            executor_id=executor_id,
            application_version=application_version,
            max_rows=max_rows - len(rows),
            clock_ms=clock_ms,
        )
        rows.extend(part.rows)
        if part.retry_after is not None:
            later = retry_after if retry_after is not None else part.retry_after
            retry_after = min(part.retry_after, later)
    return DequeueResult(rows, retry_after)


@retried
def _partitions_with_work(
    sysdb: SystemDatabase, queue_name: str, application_version: str
) -> list[str]:
    """The partition keys of a queue's ENQUEUED workflows, oldest waiting first."""
    stmt = (
        sa.select(ws.c.queue_partition_key)
        .where(
            ws.c.queue_name == queue_name,
            ws.c.status == ENQUEUED,
            ws.c.queue_partition_key.isnot(None),
            this_version(application_version),
        )
        .group_by(ws.c.queue_partition_key)
        .order_by(sa.func.min(ws.c.created_at), ws.c.queue_partition_key)
    )
    with sysdb.transaction(read=True) as conn:
        return [str(r[0]) for r in conn.execute(stmt)]


@retried
def _dequeue_counted(
    sysdb: SystemDatabase,
    queue: Queue,
    partition_key: str | None,
    *,
    executor_id: str,
    application_version: str,
    max_rows: int,
    clock_ms: Callable[[], int],
) -> DequeueResult:
    """One counted dequeue transaction: the queue's (or one partition's) limits, read
    under the queue's lock, then its next rows."""
    # The rows the limits count and the rows taken: the queue's, or one partition's.
    scope = [ws.c.queue_name == queue.name]
    lock_name = queue.name
    if partition_key is not None:
        scope.append(ws.c.queue_partition_key == partition_key)
        lock_name = f"{queue.name}\x00{partition_key}"
    with sysdb.transaction() as conn:
        if not sysdb.sqlite and (queue.concurrency is not None or queue.limiter is not None):
            conn.execute(
                sa.select(sa.func.pg_advisory_xact_lock(_ADVISORY_CLASS, advisory_key(lock_name)))
            )
        # Read the time once we hold the queue (BEGIN IMMEDIATE on SQLite, the advisory lock
        # here): start times then follow the order in which dequeues really happened, and a
        # deadline counts from the start.
        now = now_ms()
        deadline_base = clock_ms()
        budget = max_rows
        retry_after: float | None = None
        if queue.limiter is not None:
            window_start = now - int(queue.limiter["period"] * 1000)
            recent, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(ws.c.started_at_epoch_ms)).where(
                    *scope,
                    ws.c.status != ENQUEUED,
                    ws.c.started_at_epoch_ms > window_start,
                )
            ).one()
            budget = min(budget, queue.limiter["limit"] - int(recent))
            if budget <= 0 and oldest is not None:
                # The oldest start in the window leaves it first: wake up then, not later.
                retry_after = max(0.0, (int(oldest) - window_start) / 1000)
        if queue.concurrency is not None or queue.worker_concurrency is not None:
            mine = ws.c.executor_id == executor_id
            total, own = conn.execute(
                sa.select(
                    sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((mine, 1), else_=0)), 0)
                ).where(*scope, ws.c.status == PENDING)
            ).one()
            if queue.concurrency is not None:
                budget = min(budget, queue.concurrency - int(total))
            if queue.worker_concurrency is not None:
                budget = min(budget, queue.worker_concurrency - int(own))
        if budget <= 0:
            return DequeueResult([], retry_after)
        seq: sa.ColumnClause[Any] = sa.literal_column(_enqueue_order(is_sqlite=sysdb.sqlite))
        # idx_ws_queue_order's own order, and the update by key alone on PostgreSQL (where
        # the rows are ours, locked, and were ENQUEUED when locked): see _dequeue_sql.
        order: list[Any] = [ws.c.created_at, seq]
        if queue.priority_enabled:
            order.insert(0, ws.c.priority)
        pick = (
            sa.select(ws.c.workflow_uuid)
            .where(*scope, ws.c.status == ENQUEUED, this_version(application_version))
            .order_by(*order)
            .limit(budget)
        )
        if not sysdb.sqlite:
            pick = pick.with_for_update(skip_locked=True)
        ids = [r[0] for r in conn.execute(pick)]
        if not ids:
            return DequeueResult([], retry_after)
        deadline = sa.case(
            (
                sa.and_(
                    ws.c.workflow_deadline_epoch_ms.is_(None),
                    ws.c.workflow_timeout_ms.isnot(None),
                ),
                deadline_base + ws.c.workflow_timeout_ms,
            ),
            else_=ws.c.workflow_deadline_epoch_ms,
        )
        # A queued workflow's timeout runs from its start, not from its enqueue (as DBOS).
        started = conn.execute(
            ws.update()
            .where(
                ws.c.workflow_uuid.in_(ids),
                *((ws.c.status == ENQUEUED,) if sysdb.sqlite else ()),
            )
            .values(
                status=PENDING,
                executor_id=executor_id,
                started_at_epoch_ms=now,
                updated_at=now,
                workflow_deadline_epoch_ms=deadline,
            )
            .returning(*Dequeued.columns())
        ).all()
    # RETURNING gives no order: start them in dequeue (priority, FIFO) order.
    rank = {wf_id: i for i, wf_id in enumerate(ids)}
    rows = sorted(
        (Dequeued.from_mapping(r._mapping) for r in started), key=lambda d: rank[d.workflow_id]
    )
    return DequeueResult(rows, retry_after)


@retried
def requeue(sysdb: SystemDatabase, workflow_ids: Sequence[str], executor_id: str) -> int:
    """Put dequeued workflows this executor could not start back in their queue."""
    stmt = (
        ws.update()
        .where(
            ws.c.workflow_uuid.in_(list(workflow_ids)),
            ws.c.status == PENDING,
            ws.c.executor_id == executor_id,
        )
        .values(status=ENQUEUED, started_at_epoch_ms=None, updated_at=now_ms())
    )
    with sysdb.transaction() as conn:
        return int(conn.execute(stmt).rowcount)


@retried
def requeue_pending(
    sysdb: SystemDatabase, executor_ids: Sequence[str], application_version: str
) -> int:
    """Recovery: queued workflows these executors were running go back to their queue.

    They count as a recovery attempt and lose their start time, so the queue's concurrency
    and rate limits govern their new start like any other's. Only those of this
    application version (or of none), as recovery of the others.
    """
    stmt = (
        ws.update()
        .where(
            ws.c.status == PENDING,
            ws.c.executor_id.in_(list(executor_ids)),
            ws.c.queue_name.isnot(None),
            this_version(application_version),
        )
        .values(
            status=ENQUEUED,
            started_at_epoch_ms=None,
            recovery_attempts=ws.c.recovery_attempts + 1,
            updated_at=now_ms(),
        )
    )
    with sysdb.transaction() as conn:
        return int(conn.execute(stmt).rowcount)


@retried
def requeue_resumed(sysdb: SystemDatabase, workflow_id: str) -> str | None:
    """Resume a queued workflow as DBOS does: back in its queue, ENQUEUED.

    Its queue's concurrency and rate limits then govern the new start, as on recovery: a
    resume never runs it past them. Recovery attempts, start time and deadline are reset
    (a timeout runs again from the next start) and so is the deduplication ID (as DBOS).
    Returns the queue's name, or None when the workflow is not a queued one, or finished.
    """
    stmt = (
        ws.update()
        .where(
            ws.c.workflow_uuid == workflow_id,
            ws.c.queue_name.isnot(None),
            ws.c.status != SUCCESS,
        )
        .values(
            status=ENQUEUED,
            recovery_attempts=0,
            started_at_epoch_ms=None,
            workflow_deadline_epoch_ms=None,
            deduplication_id=None,
            updated_at=now_ms(),
        )
        .returning(ws.c.queue_name)
    )
    with sysdb.transaction() as conn:
        row = conn.execute(stmt).one_or_none()
    return None if row is None else str(row[0])
