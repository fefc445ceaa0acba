"""The system database's hot path: one prepared driver statement per checkpoint.

Every workflow runs these writes (its insert, each step's checkpoint, its end), so they skip
SQLAlchemy's ``Connection`` and the checkout per statement. On PostgreSQL a statement runs
in autocommit mode (no ``BEGIN``/``COMMIT`` round trips) on a pool connection this path keeps
checked out between statements; on SQLite it joins the next group commit
(:mod:`._group_commit`), one transaction with the statements other threads wrote meanwhile.
Either way it is durably committed (``synchronous=FULL`` / ``synchronous_commit=on``) before
the writer returns. It runs behind the same close gate as every transaction (:mod:`._sysdb_gate`).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ._group_commit import GroupCommit, WriteRequest
from ._schema import IDENTITY_COLUMNS, SCHEMA, operation_outputs, workflow_status
from ._sysdb_engine import BUSY_SLICE_MS, BUSY_TIMEOUT_MS, begin_immediate
from ._sysdb_gate import WRITE_LOCK_TIMEOUT, Gate, closed_error, interrupted_error

logger = logging.getLogger("spindle")


def hot_sql(template: str, *, is_sqlite: bool, casts: tuple[str, ...] = ()) -> str:
    """Driver SQL for the hot path from a two-backend template.

    ``{s}`` is the schema prefix, ``%s`` the placeholder (``?`` on SQLite), and each
    ``{cast}`` takes the next of ``casts`` on PostgreSQL (nothing on SQLite).
    """
    text = template.replace("{s}", "" if is_sqlite else f"{SCHEMA}.")
    if is_sqlite:
        return text.replace("{cast}", "").replace("%s", "?")
    for cast in casts:
        text = text.replace("{cast}", f"::{cast}", 1)
    return text


class HotInsert:
    """An ``INSERT`` of named columns of one table, as hot-path driver SQL prepared once,
    and its parameters taken from a mapping by column name.

    The columns are checked against the table's declaration (:mod:`._schema`) when the
    statement is built; a column the statement does not name keeps its default.
    ``literals``: columns set by SQL, not by a parameter (column -> SQL expression).
    ``guard``: a ``WHERE`` over the values, making it ``INSERT ... SELECT ... WHERE``
    (PostgreSQL then casts each value to its column's type: from a NULL it cannot infer
    one); ``guard_params`` names the values its placeholders take, in order.
    """

    __slots__ = ("_get", "columns", "sql")

    def __init__(
        self,
        table: sa.Table,
        columns: Sequence[str],
        *,
        is_sqlite: bool,
        literals: Mapping[str, str] | None = None,
        suffix: str = "",
        guard: str | None = None,
        guard_params: Sequence[str] = (),
    ) -> None:
        literals = dict(literals or {})
        typed = [table.c[name] for name in (*columns, *literals)]  # KeyError: not declared
        names = ", ".join(c.name for c in typed)
        if guard is None:
            values = ", ".join(["%s"] * len(columns) + list(literals.values()))
            body = f"VALUES ({values})"
            casts: tuple[str, ...] = ()
        else:
            assert not literals, "an INSERT ... SELECT takes its values as parameters"
            body = "SELECT " + ", ".join(["%s{cast}"] * len(columns)) + f" WHERE {guard}"
            pg = postgresql.dialect()  # type: ignore[no-untyped-call]
            casts = tuple(c.type.compile(dialect=pg) for c in typed)
        template = f"INSERT INTO {{s}}{table.name} ({names}) {body}{suffix}"
        self.sql = hot_sql(template, is_sqlite=is_sqlite, casts=casts)
        #: The columns given by parameters (every key :meth:`params` takes).
        self.columns = tuple(columns)
        self._get = operator.itemgetter(*self.columns, *guard_params)

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The statement's parameters from ``values`` (column name -> value): exactly the
        statement's columns, so a value for a column it does not write is an error."""
        if len(values) != len(self.columns):
            unknown = sorted(set(values) - set(self.columns))
            missing = sorted(set(self.columns) - set(values))
            raise TypeError(f"INSERT values: unknown {unknown}, missing {missing}")
        return tuple(self._get(values))


class HotStatements:
    """The statements every workflow runs, prepared once per backend."""

    __slots__ = ("finish_workflow", "insert_identified", "insert_workflow", "record_step")

    def __init__(self, is_sqlite: bool) -> None:
        columns = (
            "workflow_uuid",
            "status",
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
            "started_at_epoch_ms",
            "serialization",
        )
        self.insert_workflow = HotInsert(
            workflow_status,
            columns,
            is_sqlite=is_sqlite,
            literals={"recovery_attempts": "0"},
            suffix=" ON CONFLICT (workflow_uuid) DO NOTHING",
        )
        #: The same insert for a workflow with a class binding or an identity: its
        #: identity columns in the one statement (most workflows use the one above).
        self.insert_identified = HotInsert(
            workflow_status,
            (*columns, *IDENTITY_COLUMNS),
            is_sqlite=is_sqlite,
            literals={"recovery_attempts": "0"},
            suffix=" ON CONFLICT (workflow_uuid) DO NOTHING",
        )
        self.finish_workflow = hot_sql(
            "UPDATE {s}workflow_status SET status = %s, output = %s, error = %s,"
            " updated_at = %s WHERE workflow_uuid = %s AND status = 'PENDING'",
            is_sqlite=is_sqlite,
        )
        # One statement: the step is recorded only while its workflow is PENDING.
        self.record_step = HotInsert(
            operation_outputs,
            (
                "workflow_uuid",
                "function_id",
                "function_name",
                "output",
                "error",
                "child_workflow_id",
                "completed_at",
                "started_at_epoch_ms",
                "serialization",
            ),
            is_sqlite=is_sqlite,
            guard="EXISTS (SELECT 1 FROM {s}workflow_status"
            " WHERE workflow_uuid = %s AND status = 'PENDING')",
            guard_params=("workflow_uuid",),
        )


class _HotConnection:
    """A pool connection kept checked out by the hot path, and its DBAPI connection."""

    __slots__ = ("dbapi", "fairy")

    def __init__(self, fairy: Any) -> None:
        self.fairy = fairy
        self.dbapi: Any = fairy.driver_connection


class HotPath:
    """Runs hot-path statements behind ``gate``, keeping up to ``max_idle`` connections."""

    def __init__(self, gate: Gate, *, max_idle: int) -> None:
        self._gate = gate
        self.engine = gate.engine
        self.sqlite = gate.sqlite
        self._dbapi: Any = self.engine.dialect.loaded_dbapi
        # SQLite: hot-path writers that queue share one commit (one fsync, one lock turn).
        self.group = GroupCommit(self._commit_batch) if self.sqlite else None
        #: Pool connections this path keeps checked out, autocommit, between its statements;
        #: at most max_idle, so the pool's overflow stays for everything else.
        self.idle: list[_HotConnection] = []
        self._max_idle = max_idle

    def write(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one write statement durably, atomic on its own; returns its row count.

        A transient failure (a dropped connection, a full disk) is retried (:mod:`._db_retry`):
        a retry of a write whose commit did land finds its row there (a conflict, or no
        row to update), which each caller settles as its own.
        """
        try:
            return self._statement(sql, params, fetch=False)[0]
        except Exception as exc:  # only here, off the path of a write that succeeds
            again = lambda: self._statement(sql, params, fetch=False)[0]  # noqa: E731
            return self._gate.retrier.after_failure("a checkpoint write", again, exc)

    def write_returning(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """:meth:`write` for a statement with ``RETURNING``: returns its rows (tuples)."""
        try:
            return self._statement(sql, params, fetch=True)[1]
        except Exception as exc:
            again = lambda: self._statement(sql, params, fetch=True)[1]  # noqa: E731
            return self._gate.retrier.after_failure("a write", again, exc)

    def read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run one read statement on a parked connection: its rows (tuples).

        For a read that runs often (a queue worker's poll): no checkout, no ``BEGIN``, no
        reset on return, which through a ``Connection`` cost more CPU than the query. It is
        one statement in autocommit mode, so it sees what was committed when it began; on
        SQLite it takes no part in the group commit (a read needs no write lock).
        """
        try:
            return self._statement(sql, params, fetch=True, group=False)[1]
        except Exception as exc:
            again = lambda: self._statement(sql, params, fetch=True, group=False)[1]  # noqa: E731
            return self._gate.retrier.after_failure("a read", again, exc)

    def _statement(
        self, sql: str, params: tuple[Any, ...], *, fetch: bool, group: bool = True
    ) -> tuple[int, list[Any]]:
        """Run one write statement durably, atomic on its own: (row count, rows).

        Same gate as :meth:`Gate.transaction`: refused once closing, interruptible in
        flight, drained by close. ``group``: on SQLite, join the group commit (a read
        passes False and runs on its own connection).
        """
        g = self._gate
        gate = g.lock
        token = object()  # alive until the end: its id is this write's key in the gate
        key = id(token)
        grouped = self.group if group else None
        with gate:
            if g.closing:
                raise closed_error()
            # Admitted: from here on the write runs unless interrupted in the database, as
            # a transaction does once it is in (close() waits for it).
            hot = self.idle.pop() if self.idle and grouped is None else None
            g.in_flight[key] = hot.dbapi if hot is not None else None
        if grouped is not None:
            try:
                done = grouped.submit(sql, params, fetch=fetch)
                return done.rowcount, done.rows
            finally:
                self._finish(key, None, broken=False)
        broken = False
        try:
            if hot is None:
                hot = self._checkout()
                with gate:
                    g.in_flight[key] = hot.dbapi
            broken = True  # until the statement comes back, one way or another
            cursor = hot.dbapi.execute(sql, params)
            rows = cursor.fetchall() if fetch else []
            broken = False
            return int(cursor.rowcount), rows
        except self._dbapi.Error as exc:
            broken = not isinstance(exc, self._dbapi.IntegrityError)
            if broken and hot is not None and getattr(hot.dbapi, "closed", False):
                # The server dropped this connection: the parked ones most likely went with
                # it (a restart, a failover), and each would fail one retry to find out.
                self._drop_idle()
            raise self._db_error(sql, params, exc) from exc
        finally:
            self._finish(key, hot, broken=broken)

    def _drop_idle(self) -> None:
        """Hand every parked connection back to the pool as broken (after a lost one)."""
        with self._gate.lock:
            idle, self.idle = self.idle, []
        for hot in idle:
            self._give_back(hot, broken=True)

    def _finish(self, key: int | None, hot: _HotConnection | None, *, broken: bool) -> None:
        """A write ended: leave the gate's in-flight map (waking a close() that waits for
        it), then park its connection for the next write or hand it back to the pool."""
        g = self._gate
        with g.lock:
            if key is not None:
                del g.in_flight[key]
            hot = self._keep(hot, broken=broken)
            if g.closing:
                g.cond.notify_all()
        if hot is not None:
            self._give_back(hot, broken=broken)

    def _db_error(self, sql: str, params: tuple[Any, ...], exc: Exception) -> Exception:
        """The error a hot-path writer sees for a driver error of its statement."""
        if self._gate.closing and not isinstance(exc, self._dbapi.IntegrityError):
            return interrupted_error(exc)
        return sa.exc.DBAPIError.instance(
            sql, params, exc, self._dbapi.Error, dialect=self.engine.dialect
        )

    def _keep(self, hot: _HotConnection | None, *, broken: bool) -> _HotConnection | None:
        """Park a hot connection for the next write if it may be; else hand it back.

        Call with the gate held (``closed`` and the parking are one step: once close()
        took the idle list, nothing is parked any more). Returns the connection still to
        give back to the pool.
        """
        room = len(self.idle) < self._max_idle
        if hot is not None and not broken and not self._gate.closed and room:
            self.idle.append(hot)
            return None
        return hot

    def _commit_batch(self, take: Callable[[], list[WriteRequest]]) -> None:
        """SQLite: run one group commit's statements in one transaction (the leader's job)."""
        g = self._gate
        gate = g.lock
        lock = g.write_lock
        assert lock is not None
        # Bounded like busy_timeout: past it, SQLite's own busy handling takes over.
        held = lock.acquire(timeout=WRITE_LOCK_TIMEOUT)
        hot: _HotConnection | None = None
        key: int | None = None
        broken = False
        try:
            with gate:
                hot = self.idle.pop() if self.idle else None
            if hot is None:
                hot = self._checkout()
            # Taken only now, holding the write turn and a connection: writers that queued
            # while this leader waited for them join this batch.
            batch = take()
            key = id(batch)
            with gate:
                g.in_flight[key] = hot.dbapi
            broken = self._execute_batch(hot.dbapi, batch)
        finally:
            self._finish(key, hot, broken=broken)
            if held:  # after the connection is back: the next writer reuses it
                lock.release()

    def _execute_batch(self, dbapi: Any, batch: list[WriteRequest]) -> bool:
        """Execute and commit a batch; every request ends with its outcome. True if the
        connection may be unusable."""
        # A transaction even for one statement: BEGIN IMMEDIATE is where a writer waits for
        # another process's write lock, and there a shutdown can end the wait.
        executed: list[tuple[WriteRequest, int, list[Any] | None]] = []
        try:
            begin_immediate(dbapi, self._gate.stopping, sliced=True)
            for request in batch:
                try:
                    cursor = dbapi.execute(request.sql, request.params)
                    # RETURNING rows are read now: a statement still stepping would make
                    # the COMMIT fail ("SQL statements in progress").
                    rows = cursor.fetchall() if request.fetch else None
                    rowcount = int(cursor.rowcount)
                except self._dbapi.Error as exc:
                    if not dbapi.in_transaction:
                        raise  # SQLite rolled the whole transaction back: the batch failed
                    # A statement-level failure (a constraint, a bad parameter): SQLite
                    # undid this statement only, and the others commit.
                    request.fail(self._db_error(request.sql, request.params, exc))
                else:
                    executed.append((request, rowcount, rows))
            dbapi.execute("COMMIT")
        except self._dbapi.Error as exc:
            if dbapi.in_transaction:
                try:
                    dbapi.execute("ROLLBACK")
                except self._dbapi.Error:
                    logger.debug("spindle: rollback of a failed batch failed", exc_info=True)
            for request in batch:
                # Not done: executed but not committed, or never reached. A request failed
                # on its own statement keeps that error.
                if not request.done:
                    request.fail(self._db_error(request.sql, request.params, exc))
            return True
        # Only now, after the commit came back, is any of these rows durable.
        for request, rowcount, rows in executed:
            request.succeed(rowcount, rows)
        return False

    def _checkout(self) -> _HotConnection:
        """Check a pool connection out for :meth:`write` and put it in autocommit mode.

        SQLite connections already are (``isolation_level=None``, set on connect); they
        take the slice as busy_timeout instead: the hot path only ever waits for another
        process in :func:`begin_immediate`, and there in slices. :meth:`_give_back`
        restores both.
        """
        fairy = self.engine.raw_connection()
        hot = _HotConnection(fairy)
        try:
            if self.sqlite:
                hot.dbapi.execute(f"PRAGMA busy_timeout={BUSY_SLICE_MS}")
            else:
                hot.dbapi.autocommit = True
        except BaseException:
            fairy.close()
            raise
        return hot

    def _give_back(self, hot: _HotConnection, *, broken: bool) -> None:
        """Return a hot-path connection to the pool as the pool expects it."""
        try:
            if broken:
                hot.fairy.invalidate()
            elif self.sqlite:
                hot.dbapi.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            else:
                hot.dbapi.autocommit = False
        except Exception:
            logger.debug("spindle: could not reset a connection", exc_info=True)
            hot.fairy.invalidate()
        finally:
            hot.fairy.close()

    def release_idle(self) -> None:
        """Give every parked connection back to the pool (close, after the gate drained:
        from then on nothing is parked)."""
        with self._gate.lock:
            idle, self.idle = self.idle, []
        for hot in idle:
            self._give_back(hot, broken=False)
