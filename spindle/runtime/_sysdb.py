"""The system database: workflow status and step outputs, through SQLAlchemy Core."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError

from ._errors import DBOSNotLaunchedError
from ._group_commit import GroupCommit, WriteRequest
from ._schema import LATEST_VERSION, MIGRATIONS, SCHEMA, operation_outputs, schema_version
from ._schema import workflow_status as ws

logger = logging.getLogger("spindle")

PENDING = "PENDING"
SUCCESS = "SUCCESS"
ERROR = "ERROR"
CANCELLED = "CANCELLED"
ENQUEUED = "ENQUEUED"
MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
TERMINAL = (SUCCESS, ERROR, CANCELLED)


def now_ms() -> int:
    """Wall-clock epoch milliseconds, the unit of every timestamp in the database."""
    return int(time.time() * 1000)


def normalize_url(url: str) -> str:
    """Accept DBOS-style ``postgresql://`` URLs and drive them with psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return url.startswith("sqlite")


#: SQLite's busy_timeout (ms): how long a statement waits for another connection's lock.
_BUSY_TIMEOUT_MS = 30_000
#: The slices in which :func:`begin_immediate` waits for another process's write lock.
_BUSY_SLICE_MS = 50
_SQLITE_BUSY = 5


def begin_immediate(
    dbapi_conn: Any, should_stop: Callable[[], bool], *, sliced: bool = False
) -> None:
    """``BEGIN IMMEDIATE`` on SQLite, that a shutdown can break off while it waits.

    While another process holds the write lock, SQLite's busy handler sleeps and retries
    for busy_timeout, and ``sqlite3_interrupt()`` does not reach that wait (3.40: the
    interrupted writer still sat out its 30 s). So the wait goes in slices of
    ``_BUSY_SLICE_MS``, and between two slices ``should_stop()`` may end it: the last
    ``SQLITE_BUSY`` then propagates. Writers of this process never meet here (they queue
    on the system database's write lock first), so the slices only ever wait for others.

    ``sliced``: the connection's busy_timeout already is the slice (the hot path's
    connections keep it: the two PRAGMAs cost as much as a commit's fsync, measured).
    """
    if sliced:
        _begin_in_slices(dbapi_conn, should_stop)
        return
    dbapi_conn.execute(f"PRAGMA busy_timeout={_BUSY_SLICE_MS}")
    try:
        _begin_in_slices(dbapi_conn, should_stop)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")


def _begin_in_slices(dbapi_conn: Any, should_stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            dbapi_conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) == _SQLITE_BUSY
            if not busy or should_stop() or time.monotonic() >= deadline:
                raise


def make_engine(
    url: str,
    *,
    pool_size: int,
    sqlite_synchronous: str = "FULL",
    should_stop: Callable[[], bool] | None = None,
) -> Engine:
    """An engine set up for durable, concurrent use on either backend.

    On SQLite, ``should_stop`` makes a writer's wait for another process's write lock
    end once it returns True (:func:`begin_immediate`).
    """
    url = normalize_url(url)
    if is_sqlite(url):
        engine = sa.create_engine(
            url,
            poolclass=sa.pool.QueuePool,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"check_same_thread": False, "timeout": 30},
        ).execution_options(schema_translate_map={SCHEMA: None})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from pysqlite so BEGIN IMMEDIATE is ours to emit.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is fsynced before it returns, so a power loss loses nothing
            # acknowledged (NORMAL in WAL mode may lose the last commits).
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock up front: a deferred transaction that reads and
            # then writes fails with SQLITE_BUSY instead of waiting on busy_timeout.
            if conn.get_execution_options().get("spindle_read"):
                conn.exec_driver_sql("BEGIN")
            elif should_stop is not None:
                try:
                    begin_immediate(conn.connection.dbapi_connection, should_stop)
                except sqlite3.Error as exc:
                    # Raised in an event, outside SQLAlchemy's own wrapping of driver errors.
                    raise sa.exc.DBAPIError.instance(
                        "BEGIN IMMEDIATE", (), exc, sqlite3.Error, dialect=engine.dialect
                    ) from exc
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)


def ensure_postgres_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist."""
    u = make_url(normalize_url(url))
    if not u.drivername.startswith("postgresql") or not u.database:
        return
    admin = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": u.database}
            ).scalar()
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote(u.database)
                try:
                    conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
                except (sa.exc.ProgrammingError, sa.exc.IntegrityError):
                    # Another process created it between our check and create (a concurrent
                    # CREATE DATABASE fails with a unique violation on pg_database).
                    pass
    finally:
        admin.dispose()


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One workflow's status row."""

    workflow_id: str
    status: str
    name: str
    inputs: bytes | None
    output: bytes | None
    error: bytes | None
    executor_id: str
    application_version: str | None
    created_at: int
    updated_at: int
    recovery_attempts: int
    parent_workflow_id: str | None
    workflow_timeout_ms: int | None
    workflow_deadline_epoch_ms: int | None
    queue_name: str | None
    queue_partition_key: str | None

    @classmethod
    def of(cls, row: Any) -> StatusRow:
        """From a result row of ``_STATUS_COLUMNS``."""
        return cls(*tuple(row))


@dataclass(frozen=True, slots=True)
class StepRow:
    """One recorded step outcome."""

    function_id: int
    function_name: str
    output: bytes | None
    error: bytes | None
    child_workflow_id: str | None
    completed_at: int


_STATUS_COLUMNS = (
    ws.c.workflow_uuid,
    ws.c.status,
    ws.c.name,
    ws.c.inputs,
    ws.c.output,
    ws.c.error,
    ws.c.executor_id,
    ws.c.application_version,
    ws.c.created_at,
    ws.c.updated_at,
    ws.c.recovery_attempts,
    ws.c.parent_workflow_id,
    ws.c.workflow_timeout_ms,
    ws.c.workflow_deadline_epoch_ms,
    ws.c.queue_name,
    ws.c.queue_partition_key,
)


#: How long a writer waits for this process's SQLite write turn (as busy_timeout).
_WRITE_LOCK_TIMEOUT = 30.0


def this_version(application_version: str) -> sa.ColumnElement[bool]:
    """Rows a process of ``application_version`` may run: of that version, or of none.

    As DBOS: in a rolling deploy, old and new code never run (or replay) each other's
    workflows; a version-less row (a DBOS client wrote it) is anyone's.
    """
    return sa.or_(
        ws.c.application_version == application_version, ws.c.application_version.is_(None)
    )


def hot_sql(template: str, *, is_sqlite: bool, casts: tuple[str, ...] = ()) -> str:
    """Driver SQL for the hot path (:meth:`SystemDatabase._write`) from a two-backend template.

    ``{s}`` is the schema prefix, ``%s`` the placeholder (``?`` on SQLite), and each
    ``{cast}`` takes the next of ``casts`` on PostgreSQL (nothing on SQLite).
    """
    text = template.replace("{s}", "" if is_sqlite else f"{SCHEMA}.")
    if is_sqlite:
        return text.replace("{cast}", "").replace("%s", "?")
    for cast in casts:
        text = text.replace("{cast}", f"::{cast}", 1)
    return text


class _HotSQL:
    """The statements every workflow runs, as driver SQL text prepared once.

    Written for both backends from one template: ``{s}`` is the schema prefix and ``%s``
    the placeholder (``?`` on SQLite). PostgreSQL casts the ``INSERT ... SELECT`` values,
    whose types it cannot infer from a NULL.
    """

    __slots__ = ("finish_workflow", "insert_workflow", "record_step")

    def __init__(self, is_sqlite: bool) -> None:
        def sql(template: str, casts: tuple[str, ...] = ()) -> str:
            return hot_sql(template, is_sqlite=is_sqlite, casts=casts)

        self.insert_workflow = sql(
            "INSERT INTO {s}workflow_status (workflow_uuid, status, name, inputs, executor_id,"
            " application_version, created_at, updated_at, recovery_attempts,"
            " parent_workflow_id, workflow_timeout_ms, workflow_deadline_epoch_ms, queue_name,"
            " started_at_epoch_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s)"
            " ON CONFLICT (workflow_uuid) DO NOTHING"
        )
        self.finish_workflow = sql(
            "UPDATE {s}workflow_status SET status = %s, output = %s, error = %s,"
            " updated_at = %s WHERE workflow_uuid = %s AND status = 'PENDING'"
        )
        # One statement: the step is recorded only while its workflow is PENDING.
        self.record_step = sql(
            "INSERT INTO {s}operation_outputs (workflow_uuid, function_id, function_name,"
            " output, error, child_workflow_id, completed_at)"
            " SELECT %s{cast}, %s{cast}, %s{cast}, %s{cast}, %s{cast}, %s{cast}, %s{cast}"
            " WHERE EXISTS (SELECT 1 FROM {s}workflow_status"
            " WHERE workflow_uuid = %s AND status = 'PENDING')",
            ("text", "integer", "text", "bytea", "bytea", "text", "bigint"),
        )


class _HotConnection:
    """A pool connection kept checked out by the hot path, and its DBAPI connection."""

    __slots__ = ("dbapi", "fairy")

    def __init__(self, fairy: Any) -> None:
        self.fairy = fairy
        self.dbapi: Any = fairy.driver_connection


class SystemDatabaseClosed(DBOSNotLaunchedError):
    """The system database was closed (``destroy()``); nothing may use it any more."""


class SystemDatabase:
    """Every query the runtime makes to the system database, behind a close gate.

    The gate counts operations in flight: ``close()`` refuses new ones, interrupts the
    ones in flight when asked, waits for them to drain and only then disposes the engine,
    so no thread ever runs a query on a closed pool (the PR #553 bug).
    """

    def __init__(self, url: str, *, pool_size: int = 20, sqlite_synchronous: str = "FULL"):
        self.url = normalize_url(url)
        self.sqlite = is_sqlite(self.url)
        if not self.sqlite:
            ensure_postgres_database(self.url)
        self.engine = make_engine(
            self.url,
            pool_size=pool_size,
            sqlite_synchronous=sqlite_synchronous,
            should_stop=self._stopping,
        )
        self._read_engine = self.engine.execution_options(spindle_read=True)
        # The gate's lock, taken directly on the hot path (cheaper than the Condition's
        # Python-level __enter__); notify/wait go through the Condition built on it.
        self._gate_lock = threading.Lock()
        self._gate = threading.Condition(self._gate_lock)
        self._in_flight: dict[int, Any] = {}
        self._closing = False
        self._closed = False
        dialect = sqlite if self.sqlite else postgresql
        self._insert = dialect.insert
        self._dbapi: Any = self.engine.dialect.loaded_dbapi
        self._sql = _HotSQL(self.sqlite)
        # SQLite has one writer at a time. Writers of this process queue on this lock, not in
        # SQLite's busy handler, which sleeps (1, 2, 5, 10 ... 100 ms) between its retries.
        self._write_lock = threading.Lock() if self.sqlite else None
        # SQLite: hot-path writers that queue share one commit (one fsync, one lock turn).
        self._group = GroupCommit(self._commit_batch) if self.sqlite else None
        # Pool connections the hot path (_write) keeps checked out, autocommit, between its
        # statements; at most pool_size, so the pool's overflow stays for everything else.
        self._idle: list[_HotConnection] = []
        self._max_idle = pool_size

    # -- the gate ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _op(self, *, read: bool = False) -> Iterator[Connection]:
        with self._gate:
            if self._closing:
                raise SystemDatabaseClosed("the system database is closed (destroy() ran)")
            token = object()
            self._in_flight[id(token)] = None
        lock = None if read else self._write_lock
        held = False
        try:
            if lock is not None:
                # Bounded like busy_timeout: past it, SQLite's own busy handling takes over.
                held = lock.acquire(timeout=_WRITE_LOCK_TIMEOUT)
            engine = self._read_engine if read else self.engine
            with engine.connect() as conn:
                # In flight before BEGIN: a writer waiting there for another process's
                # write lock is one that interrupt() must reach.
                with self._gate:
                    self._in_flight[id(token)] = conn.connection.dbapi_connection
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            if self._closing:
                raise SystemDatabaseClosed("interrupted by shutdown") from exc
            raise
        finally:
            if held:
                lock.release()  # type: ignore[union-attr]
            with self._gate:
                del self._in_flight[id(token)]
                self._gate.notify_all()

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one write statement durably, atomic on its own; returns its row count."""
        return self._write_statement(sql, params, fetch=False)[0]

    def _write_returning(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """:meth:`_write` for a statement with ``RETURNING``: returns its rows."""
        return self._write_statement(sql, params, fetch=True)[1]

    def _write_statement(
        self, sql: str, params: tuple[Any, ...], *, fetch: bool
    ) -> tuple[int, list[Any]]:
        """Run one write statement durably, atomic on its own: (row count, rows).

        The hot path: no SQLAlchemy ``Connection``, no checkout per statement. On
        PostgreSQL the statement runs in autocommit mode (no ``BEGIN``/``COMMIT`` round
        trips) on a pool connection this path keeps checked out (``_idle`` between
        statements); on SQLite it joins the next group commit (:mod:`._group_commit`), one
        transaction with the statements other threads wrote meanwhile. Either way it is
        durably committed (fsynced: ``synchronous=FULL`` / ``synchronous_commit=on``) before
        this returns. Same gate as :meth:`_op`: refused once closing, interruptible in
        flight, drained by :meth:`close`.
        """
        gate = self._gate_lock
        token = object()  # alive until the end: its id is this write's key in the gate
        key = id(token)
        with gate:
            if self._closing:
                raise SystemDatabaseClosed("the system database is closed (destroy() ran)")
            # Admitted: from here on the write runs unless interrupted in the database, as
            # an _op does once it is in (close() waits for it).
            hot = self._idle.pop() if self._idle and self._group is None else None
            self._in_flight[key] = hot.dbapi if hot is not None else None
        if self._group is not None:
            try:
                done = self._group.submit(sql, params, fetch=fetch)
                return done.rowcount, done.rows
            finally:
                with gate:
                    del self._in_flight[key]
                    if self._closing:
                        self._gate.notify_all()
        broken = False
        try:
            if hot is None:
                hot = self._checkout()
                with gate:
                    self._in_flight[key] = hot.dbapi
            broken = True  # until the statement comes back, one way or another
            cursor = hot.dbapi.execute(sql, params)
            rows = cursor.fetchall() if fetch else []
            broken = False
            return int(cursor.rowcount), rows
        except self._dbapi.Error as exc:
            broken = not isinstance(exc, self._dbapi.IntegrityError)
            raise self._db_error(sql, params, exc) from exc
        finally:
            with gate:
                del self._in_flight[key]
                hot = self._keep(hot, broken=broken)
                if self._closing:
                    self._gate.notify_all()
            if hot is not None:
                self._give_back(hot, broken=broken)

    def _db_error(self, sql: str, params: tuple[Any, ...], exc: Exception) -> Exception:
        """The error a hot-path writer sees for a driver error of its statement."""
        if self._closing and not isinstance(exc, self._dbapi.IntegrityError):
            closed = SystemDatabaseClosed("interrupted by shutdown")
            closed.__cause__ = exc
            return closed
        return sa.exc.DBAPIError.instance(
            sql, params, exc, self._dbapi.Error, dialect=self.engine.dialect
        )

    def _keep(self, hot: _HotConnection | None, *, broken: bool) -> _HotConnection | None:
        """Park a hot connection for the next write if it may be; else hand it back.

        Call with the gate held. Returns the connection still to give back to the pool.
        """
        room = len(self._idle) < self._max_idle
        if hot is not None and not broken and not self._closed and room:
            self._idle.append(hot)
            return None
        return hot

    def _commit_batch(self, take: Callable[[], list[WriteRequest]]) -> None:
        """SQLite: run one group commit's statements in one transaction (the leader's job)."""
        gate = self._gate_lock
        lock = self._write_lock
        assert lock is not None
        # Bounded like busy_timeout: past it, SQLite's own busy handling takes over.
        held = lock.acquire(timeout=_WRITE_LOCK_TIMEOUT)
        hot: _HotConnection | None = None
        key: int | None = None
        broken = False
        try:
            with gate:
                hot = self._idle.pop() if self._idle else None
            if hot is None:
                hot = self._checkout()
            # Taken only now, holding the write turn and a connection: writers that queued
            # while this leader waited for them join this batch.
            batch = take()
            key = id(batch)
            with gate:
                self._in_flight[key] = hot.dbapi
            broken = self._execute_batch(hot.dbapi, batch)
        finally:
            with gate:
                if key is not None:
                    del self._in_flight[key]
                hot = self._keep(hot, broken=broken)
                if self._closing:
                    self._gate.notify_all()
            if hot is not None:
                self._give_back(hot, broken=broken)
            if held:  # after the connection is back: the next writer reuses it
                lock.release()

    def _execute_batch(self, dbapi: Any, batch: list[WriteRequest]) -> bool:
        """Execute and commit a batch; every request ends with its outcome. True if the
        connection may be unusable."""
        # A transaction even for one statement: BEGIN IMMEDIATE is where a writer waits for
        # another process's write lock, and there a shutdown can end the wait.
        executed: list[tuple[WriteRequest, int, list[Any] | None]] = []
        try:
            begin_immediate(dbapi, self._stopping, sliced=True)
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
        """Check a pool connection out for :meth:`_write` and put it in autocommit mode.

        SQLite connections already are (``isolation_level=None``, set on connect); they
        take the slice as busy_timeout instead: the hot path only ever waits for another
        process in :func:`begin_immediate`, and there in slices. :meth:`_give_back`
        restores both.
        """
        fairy = self.engine.raw_connection()
        hot = _HotConnection(fairy)
        try:
            if self.sqlite:
                hot.dbapi.execute(f"PRAGMA busy_timeout={_BUSY_SLICE_MS}")
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
                hot.dbapi.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            else:
                hot.dbapi.autocommit = False
        except Exception:
            logger.debug("spindle: could not reset a connection", exc_info=True)
            hot.fairy.invalidate()
        finally:
            hot.fairy.close()

    def _stopping(self) -> bool:
        """True once writers must stop waiting for another process's lock (interrupt)."""
        return self._closing

    @property
    def closed(self) -> bool:
        """True once ``close()`` began."""
        return self._closing

    def interrupt(self) -> int:
        """Refuse new operations and cancel the ones blocked in the database now.

        Returns how many in-flight operations were interrupted.
        """
        with self._gate:
            self._closing = True
            conns = [c for c in self._in_flight.values() if c is not None]
        count = 0
        for dbapi_conn in conns:
            try:
                if self.sqlite:
                    dbapi_conn.interrupt()
                else:
                    dbapi_conn.cancel()
                count += 1
            except Exception:
                logger.debug("spindle: could not interrupt a connection", exc_info=True)
        return count

    def close(self, timeout: float = 10.0) -> int:
        """Wait (at most ``timeout``) for in-flight operations, then dispose the engine.

        Returns how many operations were still in flight when the engine was disposed.
        """
        deadline = time.monotonic() + timeout
        with self._gate:
            self._closing = True
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._gate.wait(left)
            remaining = len(self._in_flight)
            self._closed = True
            idle, self._idle = self._idle, []
        for hot in idle:
            self._give_back(hot, broken=False)
        self.engine.dispose()
        return remaining

    # -- schema --------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the latest version (concurrent launches are serialised)."""
        with self.engine.begin() as conn:
            if not self.sqlite:
                # Two processes launching at once must not both run a migration. The lock
                # comes first: two concurrent CREATE SCHEMA IF NOT EXISTS can still collide.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(5357494)")
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(schema_version.c.version)).scalar()
            if current is None:
                conn.execute(schema_version.insert().values(id=1, version=0))
                current = 0
            if current > LATEST_VERSION:
                raise DBOSNotLaunchedError(
                    f"the system database schema is version {current}, newer than this "
                    f"Spindle ({LATEST_VERSION}); upgrade Spindle"
                )
            for version in range(current, LATEST_VERSION):
                MIGRATIONS[version](conn)
            conn.execute(schema_version.update().values(version=LATEST_VERSION))

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
    ) -> StatusRow | None:
        """Insert a new workflow; returns None when inserted, or the existing row."""
        now = now_ms()
        params = (
            workflow_id,
            status,
            name,
            inputs,
            executor_id,
            application_version,
            now,
            now,
            parent_workflow_id,
            timeout_ms,
            deadline_epoch_ms,
            queue_name,
            now if status == PENDING else None,
        )
        return self.insert_or_existing(self._sql.insert_workflow, params, workflow_id)

    def insert_or_existing(
        self, sql: str, params: tuple[Any, ...], workflow_id: str
    ) -> StatusRow | None:
        """Run a hot-path ``INSERT ... ON CONFLICT (workflow_uuid) DO NOTHING`` of one
        workflow; None when it inserted, else the row already under that ID."""
        while True:
            # The driver's rowcount of the one statement: 1 inserted, 0 the ID was taken.
            if self._write(sql, params) == 1:
                return None
            row = self.get_status(workflow_id)
            if row is not None:
                return row
            # Garbage-collected between the two statements: the ID is free again.

    def get_status(self, workflow_id: str) -> StatusRow | None:
        """The status row of one workflow, or None."""
        with self._op(read=True) as conn:
            row = conn.execute(
                sa.select(*_STATUS_COLUMNS).where(ws.c.workflow_uuid == workflow_id)
            ).one_or_none()
        return StatusRow.of(row) if row else None

    def finish_workflow(
        self, workflow_id: str, status: str, *, output: bytes | None, error: bytes | None
    ) -> bool:
        """Record a PENDING workflow's end; False if it was no longer PENDING (cancelled)."""
        params = (status, output, error, now_ms(), workflow_id)
        return self._write(self._sql.finish_workflow, params) == 1

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
        with self._op() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def exceed_recovery(self, workflow_id: str) -> bool:
        """Move a PENDING workflow to MAX_RECOVERY_ATTEMPTS_EXCEEDED (a dead letter)."""
        stmt = (
            ws.update()
            .where(ws.c.workflow_uuid == workflow_id, ws.c.status == PENDING)
            .values(status=MAX_RECOVERY_ATTEMPTS_EXCEEDED, updated_at=now_ms())
        )
        with self._op() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def pending_workflow_ids(
        self, executor_ids: Sequence[str], application_version: str
    ) -> list[str]:
        """IDs of PENDING workflows owned by these executors, oldest first, of this
        application version or of none: as DBOS, a process recovers only workflows its own
        code wrote (another version's wait for a process of that version)."""
        stmt = (
            sa.select(ws.c.workflow_uuid)
            .where(
                ws.c.status == PENDING,
                ws.c.executor_id.in_(list(executor_ids)),
                this_version(application_version),
            )
            .order_by(ws.c.created_at)
        )
        with self._op(read=True) as conn:
            return [r[0] for r in conn.execute(stmt)]

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
        with self._op() as conn:
            ids = [r[0] for r in conn.execute(sa.select(tree.c.workflow_uuid))]
            # RETURNING, not the tree: a workflow that finished meanwhile keeps its outcome,
            # and the caller cancels in memory only what this statement really cancelled.
            changed = conn.execute(
                ws.update()
                .where(ws.c.workflow_uuid.in_(ids), ws.c.status.in_([PENDING, ENQUEUED]))
                .values(status=CANCELLED, updated_at=now_ms())
                .returning(ws.c.workflow_uuid)
            )
            return [r[0] for r in changed]

    def cancel(self, workflow_id: str) -> bool:
        """Cancel one workflow if it has not finished; False if it had."""
        with self._op() as conn:
            return bool(
                conn.execute(
                    ws.update()
                    .where(ws.c.workflow_uuid == workflow_id, ws.c.status.in_([PENDING, ENQUEUED]))
                    .values(status=CANCELLED, updated_at=now_ms())
                ).rowcount
                == 1
            )

    def resume(self, workflow_id: str, executor_id: str) -> StatusRow | None:
        """Set a cancelled or failed workflow back to PENDING on this executor."""
        with self._op() as conn:
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
                sa.select(*_STATUS_COLUMNS).where(ws.c.workflow_uuid == workflow_id)
            ).one_or_none()
        return StatusRow.of(row) if row else None

    def list_workflows(
        self,
        *,
        workflow_ids: Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        start_time_ms: int | None = None,
        end_time_ms: int | None = None,
        queue_name: str | Sequence[str] | None = None,
        queues_only: bool = False,
        limit: int | None = None,
        offset: int | None = None,
        sort_desc: bool = False,
    ) -> list[StatusRow]:
        """Workflows matching every given filter, by creation time.

        ``queues_only``: only workflows of a queue, and (unless ``status`` says otherwise)
        only those still in it, ENQUEUED or PENDING, as DBOS's ``list_queued_workflows``.
        """
        stmt = sa.select(*_STATUS_COLUMNS)
        if workflow_ids is not None:
            stmt = stmt.where(ws.c.workflow_uuid.in_(list(workflow_ids)))
        if queues_only:
            stmt = stmt.where(ws.c.queue_name.isnot(None))
            if status is None:
                status = [ENQUEUED, PENDING]
        if queue_name is not None:
            names = [queue_name] if isinstance(queue_name, str) else list(queue_name)
            stmt = stmt.where(ws.c.queue_name.in_(names))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            stmt = stmt.where(ws.c.status.in_(statuses))
        if name is not None:
            stmt = stmt.where(ws.c.name == name)
        if start_time_ms is not None:
            stmt = stmt.where(ws.c.created_at >= start_time_ms)
        if end_time_ms is not None:
            stmt = stmt.where(ws.c.created_at <= end_time_ms)
        # Workflows created in the same millisecond keep one order, reversed by sort_desc.
        keys = (ws.c.created_at, ws.c.workflow_uuid)
        stmt = stmt.order_by(*(k.desc() if sort_desc else k.asc() for k in keys))
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset is not None:
            stmt = stmt.offset(offset)
        with self._op(read=True) as conn:
            return [StatusRow.of(r) for r in conn.execute(stmt)]

    # -- steps ---------------------------------------------------------------------------

    def step_outputs(self, workflow_id: str) -> dict[int, StepRow]:
        """Every recorded step of a workflow, by function id."""
        oo = operation_outputs
        stmt = sa.select(
            oo.c.function_id,
            oo.c.function_name,
            oo.c.output,
            oo.c.error,
            oo.c.child_workflow_id,
            oo.c.completed_at,
        ).where(oo.c.workflow_uuid == workflow_id)
        with self._op(read=True) as conn:
            return {r[0]: StepRow(*tuple(r)) for r in conn.execute(stmt)}

    def record_step(
        self,
        workflow_id: str,
        function_id: int,
        function_name: str,
        *,
        output: bytes | None,
        error: bytes | None,
        child_workflow_id: str | None = None,
    ) -> str:
        """Durably record a step outcome, only while the workflow is PENDING.

        Returns ``"recorded"``, ``"not-pending"`` (cancelled meanwhile: the check and the
        write are one statement, so no extra round trip) or ``"conflict"`` (already recorded
        by another execution of the same workflow).
        """
        params = (
            workflow_id,
            function_id,
            function_name,
            output,
            error,
            child_workflow_id,
            now_ms(),
            workflow_id,
        )
        try:
            rows = self._write(self._sql.record_step, params)
        except IntegrityError:
            return "conflict"
        return "recorded" if rows == 1 else "not-pending"
