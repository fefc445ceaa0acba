"""The system database: the one object the runtime holds, and its workflow and step queries.

It is composed of the connection and close gate (:mod:`._sysdb_gate`, with the engine of
:mod:`._sysdb_engine`) and the hot path (:mod:`._sysdb_hot`); the schema and its migrations
are :mod:`._schema` and :mod:`._migrations`, the row types :mod:`._rows`. The queries of
queues, messaging, schedules and the admin endpoints live in their own modules and run
through the same gate (:meth:`SystemDatabase.transaction`) and hot path
(:attr:`SystemDatabase.hot`), so shutdown interrupts and drains them like these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ._db_retry import DEFAULT_CLIENT_RETRIES, Retrier, retried
from ._migrations import migrate
from ._rows import (
    CANCELLED,
    DELAYED,
    ENQUEUED,
    MAX_RECOVERY_ATTEMPTS_EXCEEDED,
    PENDING,
    SUCCESS,
    StatusRow,
    StepRow,
    now_ms,
)
from ._schema import operation_outputs as oo
from ._schema import workflow_status as ws
from ._serialization import Codecs
from ._sysdb_engine import ensure_postgres_database, is_sqlite, normalize_url
from ._sysdb_gate import Gate
from ._sysdb_hot import HotPath, HotStatements


def this_version(application_version: str) -> sa.ColumnElement[bool]:
    """Rows a process of ``application_version`` may run: of that version, or of none.

    As DBOS: in a rolling deploy, old and new code never run (or replay) each other's
    workflows; a version-less row (a DBOS client wrote it) is anyone's.
    """
    return sa.or_(
        ws.c.application_version == application_version, ws.c.application_version.is_(None)
    )


def rare(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """SQLite: mark a status condition as true of few rows (PENDING, ENQUEUED).

    After an ANALYZE of a table of finished workflows, SQLite's statistics say every status
    value matches every row (they hold no histogram), and its planner scans the whole table
    instead of searching idx_ws_status_executor: 50-90 ms at a million rows, against 0.1.
    ``likelihood()`` is SQLite's own hint for that; PostgreSQL's statistics know.
    """
    # Untyped: typed Boolean, SQLAlchemy would write "likelihood(...) = 1", which SQLite
    # no longer reads as the hint.
    hint: Any = sa.func.likelihood(condition, sa.literal_column("0.001"))
    return cast(sa.ColumnElement[bool], hint)


def _is_this_insert(row: StatusRow, values: Mapping[str, Any]) -> bool:
    """True when ``row`` is the one ``values`` inserted (same creator, millisecond, inputs)."""
    return bool(
        row.created_at == values["created_at"]
        and row.executor_id == values["executor_id"]
        and row.name == values["name"]
        and row.inputs == values["inputs"]
    )


class SystemDatabase:
    """Every query the runtime makes to the system database, behind one close gate.

    ``close()`` refuses new operations, waits for the ones in flight to drain (``interrupt()``
    first cancels those blocked in the database) and only then disposes the engine.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        sqlite_synchronous: str = "FULL",
        max_connections: int | None = None,
        client_retries: int = DEFAULT_CLIENT_RETRIES,
        codecs: Codecs | None = None,
    ):
        self.url = normalize_url(url)
        self.sqlite = is_sqlite(self.url)
        if not self.sqlite:
            ensure_postgres_database(self.url)
        #: The engine and the close gate every operation goes through.
        self.gate = Gate(
            self.url,
            pool_size=pool_size,
            sqlite_synchronous=sqlite_synchronous,
            max_connections=max_connections,
            client_retries=client_retries,
        )
        self.engine = self.gate.engine
        #: The hot path: one prepared driver statement per write (:mod:`._sysdb_hot`).
        self.hot = HotPath(self.gate, max_idle=pool_size)
        #: How values are written (the application's serializer) and read (by format).
        self.codecs = codecs if codecs is not None else Codecs()
        self._sql = HotStatements(self.sqlite)
        self._insert: Callable[..., Any] = (sqlite if self.sqlite else postgresql).insert

    # -- the gate ------------------------------------------------------------------------

    def transaction(self, *, read: bool = False) -> contextlib.AbstractContextManager[Connection]:
        """A connection in a transaction behind the close gate (see :meth:`Gate.transaction`).

        Every query that is not the hot path's runs in one: ``with sysdb.transaction() as
        conn: ...`` commits when the block ends, and raises :class:`SystemDatabaseClosed`
        once the database is closing or a shutdown interrupted it. ``read=True`` for a
        read-only transaction (on SQLite it does not wait for the write turn).
        """
        return self.gate.transaction(read=read)

    def dialect_insert(self, table: sa.Table) -> Any:
        """The backend's ``INSERT`` of ``table``, which has ``on_conflict_do_nothing`` and
        ``on_conflict_do_update`` on both SQLite and PostgreSQL."""
        return self._insert(table)

    @property
    def retrier(self) -> Retrier:
        """Retries the transient errors of every operation (:mod:`._db_retry`)."""
        return self.gate.retrier

    @property
    def closed(self) -> bool:
        """True once ``close()`` (or ``interrupt()``) began."""
        return self.gate.closing

    def interrupt(self) -> int:
        """Refuse new operations and cancel the ones blocked in the database now.

        Returns how many in-flight operations were interrupted.
        """
        return self.gate.interrupt()

    def close(self, timeout: float = 10.0) -> int:
        """Wait (at most ``timeout``) for in-flight operations, then dispose the engine.

        Returns how many operations were still in flight when the engine was disposed.
        """
        remaining = self.gate.drain(timeout)
        # After the drain: no connection is parked any more, so these are all of them.
        self.hot.release_idle()
        self.engine.dispose()
        return remaining

    # -- schema --------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the latest version (concurrent launches are serialised)."""
        migrate(self.engine)

    # -- workflows -----------------------------------------------------------------------

    def insert_workflow(
        self,
        *,
        workflow_id: str,
        name: str,
        inputs: bytes,
        executor_id: str,
        application_version: str,
        status: str = PENDING,
        parent_workflow_id: str | None = None,
        timeout_ms: int | None = None,
        deadline_epoch_ms: int | None = None,
        queue_name: str | None = None,
        identity: Mapping[str, Any] | None = None,
        serialization: str | None = None,
    ) -> StatusRow | None:
        """Insert a new workflow; returns None when inserted, or the existing row.

        ``identity``: its identity columns (``_identity_columns``), in the same insert.
        ``serialization``: the format of ``inputs``, and of the output and error to come."""
        now = now_ms()
        insert = self._sql.insert_workflow if identity is None else self._sql.insert_identified
        values: dict[str, Any] = {
            "workflow_uuid": workflow_id,
            "status": status,
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
            "started_at_epoch_ms": now if status == PENDING else None,
            "serialization": serialization,
        }
        if identity is not None:
            values.update(identity)
        return self.insert_or_existing(insert.sql, insert.params(values), values)

    def insert_or_existing(
        self, sql: str, params: tuple[Any, ...], values: Mapping[str, Any]
    ) -> StatusRow | None:
        """Run a hot-path ``INSERT ... ON CONFLICT (workflow_uuid) DO NOTHING`` of one
        workflow (``values``: its columns by name); None when it inserted, else the row
        already under that ID."""
        workflow_id = values["workflow_uuid"]
        while True:
            # The driver's rowcount of the one statement: 1 inserted, 0 the ID was taken.
            if self.hot.write(sql, params) == 1:
                return None
            row = self.get_status(workflow_id)
            if row is not None and _is_this_insert(row, values):
                # A retry of this very insert, whose first commit landed but whose answer
                # was lost with its connection: it is ours to run, not someone else's.
                return None
            if row is not None:
                return row
            # Garbage-collected between the two statements: the ID is free again.

    @retried
    def get_status(self, workflow_id: str) -> StatusRow | None:
        """The status row of one workflow, or None."""
        with self.transaction(read=True) as conn:
            row = conn.execute(
                sa.select(*StatusRow.columns()).where(ws.c.workflow_uuid == workflow_id)
            ).one_or_none()
        return StatusRow.from_mapping(row._mapping) if row else None

    def finish_workflow(
        self, workflow_id: str, status: str, *, output: bytes | None, error: bytes | None
    ) -> bool:
        """Record a PENDING workflow's end; False if it was no longer PENDING (cancelled)."""
        params = (status, output, error, now_ms(), workflow_id)
        if self.hot.write(self._sql.finish_workflow, params) == 1:
            return True
        # Not PENDING any more: cancelled, or this very update committed on a connection
        # that died before answering and its retry found its own work done. Only the
        # first is a False (a cancel): the outcome recorded must reach the caller.
        row = self.get_status(workflow_id)
        return (
            row is not None
            and row.status == status
            and row.output == output
            and (row.error == error)
        )

    @retried
    def claim_for_recovery(self, workflow_id: str, executor_id: str) -> bool:
        """Count a recovery attempt on a PENDING workflow; False if it is not PENDING."""
        stmt = (
            ws.update()
            .where(ws.c.workflow_uuid == workflow_id, ws.c.status == PENDING)
            .values(
                recovery_attempts=ws.c.recovery_attempts + 1,
                executor_id=executor_id,
                updated_at=now_ms(),
            )
        )
        with self.transaction() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    @retried
    def exceed_recovery(self, workflow_id: str) -> bool:
        """Move a PENDING workflow to MAX_RECOVERY_ATTEMPTS_EXCEEDED (a dead letter)."""
        stmt = (
            ws.update()
            .where(ws.c.workflow_uuid == workflow_id, ws.c.status == PENDING)
            .values(status=MAX_RECOVERY_ATTEMPTS_EXCEEDED, updated_at=now_ms())
        )
        with self.transaction() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    @retried
    def pending_workflow_ids(
        self, executor_ids: Sequence[str], application_version: str
    ) -> list[str]:
        """IDs of PENDING workflows owned by these executors, oldest first, of this
        application version or of none: as DBOS, a process recovers only workflows its own
        code wrote (another version's wait for a process of that version)."""
        # Sorted here, not by ORDER BY: with ORDER BY created_at, SQLite's planner may walk
        # idx_ws_created_at over every finished row (90 ms at a million rows).
        pending = ws.c.status == PENDING
        stmt = sa.select(ws.c.workflow_uuid, ws.c.created_at).where(
            rare(pending) if self.sqlite else pending,
            ws.c.executor_id.in_(list(executor_ids)),
            this_version(application_version),
        )
        with self.transaction(read=True) as conn:
            rows = [(r[1], r[0]) for r in conn.execute(stmt)]
        return [wf_id for _, wf_id in sorted(rows)]

    @retried
    def cancel_tree(self, workflow_id: str) -> list[str]:
        """Cancel a workflow and its unfinished descendants; returns only the IDs it cancelled."""
        tree = (
            sa.select(ws.c.workflow_uuid)
            .where(ws.c.workflow_uuid == workflow_id)
            .cte("tree", recursive=True)
        )
        child = ws.alias("child")
        tree = tree.union_all(
            sa.select(child.c.workflow_uuid).where(
                child.c.parent_workflow_id == tree.c.workflow_uuid
            )
        )
        with self.transaction() as conn:
            ids = [r[0] for r in conn.execute(sa.select(tree.c.workflow_uuid))]
            # RETURNING, not the tree: a workflow that finished meanwhile keeps its outcome,
            # and the caller cancels in memory only what this statement really cancelled.
            changed = conn.execute(
                ws.update()
                .where(ws.c.workflow_uuid.in_(ids), ws.c.status.in_([PENDING, ENQUEUED, DELAYED]))
                .values(status=CANCELLED, updated_at=now_ms())
                .returning(ws.c.workflow_uuid)
            )
            return [r[0] for r in changed]

    @retried
    def cancel(self, workflow_id: str) -> bool:
        """Cancel one workflow if it has not finished; False if it had."""
        with self.transaction() as conn:
            return bool(
                conn.execute(
                    ws.update()
                    .where(
                        ws.c.workflow_uuid == workflow_id,
                        ws.c.status.in_([PENDING, ENQUEUED, DELAYED]),
                    )
                    .values(status=CANCELLED, updated_at=now_ms())
                ).rowcount
                == 1
            )

    @retried
    def resume(self, workflow_id: str, executor_id: str) -> StatusRow | None:
        """Set a cancelled or failed workflow back to PENDING on this executor."""
        with self.transaction() as conn:
            conn.execute(
                ws.update()
                .where(ws.c.workflow_uuid == workflow_id, ws.c.status.notin_([SUCCESS]))
                .values(
                    status=PENDING,
                    executor_id=executor_id,
                    recovery_attempts=0,
                    workflow_deadline_epoch_ms=None,
                    updated_at=now_ms(),
                )
            )
            row = conn.execute(
                sa.select(*StatusRow.columns()).where(ws.c.workflow_uuid == workflow_id)
            ).one_or_none()
        return StatusRow.from_mapping(row._mapping) if row else None

    # -- steps ---------------------------------------------------------------------------

    @retried
    def step_outputs(self, workflow_id: str) -> dict[int, StepRow]:
        """Every recorded step of a workflow, by function id."""
        stmt = sa.select(*StepRow.columns()).where(oo.c.workflow_uuid == workflow_id)
        with self.transaction(read=True) as conn:
            rows = [StepRow.from_mapping(r._mapping) for r in conn.execute(stmt)]
        return {row.function_id: row for row in rows}

    def record_step(
        self,
        workflow_id: str,
        function_id: int,
        function_name: str,
        *,
        output: bytes | None,
        error: bytes | None,
        child_workflow_id: str | None = None,
        started_at: int | None = None,
        serialization: str | None = None,
    ) -> str:
        """Durably record a step outcome, only while the workflow is PENDING.

        ``started_at`` (epoch ms) is when the operation began; by default, now.

        Returns ``"recorded"``, ``"not-pending"`` (cancelled meanwhile: the check and the
        write are one statement, so no extra round trip) or ``"conflict"`` (already recorded
        by another execution of the same workflow).
        """
        insert = self._sql.record_step
        now = now_ms()
        params = insert.params(
            {
                "workflow_uuid": workflow_id,
                "function_id": function_id,
                "function_name": function_name,
                "output": output,
                "error": error,
                "child_workflow_id": child_workflow_id,
                "completed_at": now,
                "started_at_epoch_ms": now if started_at is None else started_at,
                "serialization": serialization,
            }
        )
        try:
            rows = self.hot.write(insert.sql, params)
        except IntegrityError:
            return "conflict"
        return "recorded" if rows == 1 else "not-pending"
