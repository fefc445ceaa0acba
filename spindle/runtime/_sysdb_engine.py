"""The system database's connection: URLs, the engine, and SQLite's busy handling.

Everything here is about reaching the database at all; what runs on a connection, and
when a connection may be used, is the gate's (:mod:`._sysdb_gate`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url

from ._schema import SCHEMA


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
BUSY_TIMEOUT_MS = 30_000
#: The slices in which :func:`begin_immediate` waits for another process's write lock.
BUSY_SLICE_MS = 50
_SQLITE_BUSY = 5


def begin_immediate(
    dbapi_conn: Any, should_stop: Callable[[], bool], *, sliced: bool = False
) -> None:
    """``BEGIN IMMEDIATE`` on SQLite, that a shutdown can break off while it waits.

    While another process holds the write lock, SQLite's busy handler sleeps and retries
    for busy_timeout, and ``sqlite3_interrupt()`` does not reach that wait (3.40: the
    interrupted writer still sat out its 30 s). So the wait goes in slices of
    ``BUSY_SLICE_MS``, and between two slices ``should_stop()`` may end it: the last
    ``SQLITE_BUSY`` then propagates. Writers of this process never meet here (they queue
    on the system database's write lock first), so the slices only ever wait for others.

    ``sliced``: the connection's busy_timeout already is the slice (the hot path's
    connections keep it: the two PRAGMAs cost as much as a commit's fsync, measured).
    """
    if sliced:
        _begin_in_slices(dbapi_conn, should_stop)
        return
    dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_SLICE_MS}")
    try:
        _begin_in_slices(dbapi_conn, should_stop)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _begin_in_slices(dbapi_conn: Any, should_stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
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
    max_connections: int | None = None,
) -> Engine:
    """An engine set up for durable, concurrent use on either backend.

    On SQLite, ``should_stop`` makes a writer's wait for another process's write lock
    end once it returns True (:func:`begin_immediate`). ``max_connections``: how many
    connections the pool may open in all (``pool_size`` stay open; at least twice that).
    """
    url = normalize_url(url)
    overflow = max(pool_size, (max_connections or 0) - pool_size)
    if is_sqlite(url):
        engine = sa.create_engine(
            url,
            poolclass=sa.pool.QueuePool,
            pool_size=pool_size,
            max_overflow=overflow,
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
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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
    # No pre-ping (a round trip per checkout): a connection found dead fails its operation
    # once, SQLAlchemy then invalidates every connection of the pool opened before that
    # failure, and the operation's retry (:mod:`._db_retry`) runs on a fresh one.
    return sa.create_engine(url, pool_size=pool_size, max_overflow=overflow, pool_pre_ping=False)


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
