"""The system database's close gate: every query runs through it, so shutdown can stop them.

The gate counts operations in flight: :meth:`Gate.close` refuses new ones, :meth:`Gate.interrupt`
cancels the ones blocked in the database, and closing waits for them to drain before the
engine is disposed, so no thread ever runs a query on a closed pool (the PR #553 bug).

Two ways in: :meth:`Gate.transaction`, a SQLAlchemy transaction for every query that is not
the hot path, and the hot path's own admission (:mod:`._sysdb_hot`), which takes
:attr:`Gate.lock` directly and registers its DBAPI connection in :attr:`Gate.in_flight`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._db_retry import DEFAULT_CLIENT_RETRIES, Retrier
from ._errors import DBOSNotLaunchedError
from ._sysdb_engine import is_sqlite, make_engine, normalize_url

logger = logging.getLogger("spindle")

#: How long a writer waits for this process's SQLite write turn (as busy_timeout).
WRITE_LOCK_TIMEOUT = 30.0


class SystemDatabaseClosed(DBOSNotLaunchedError):
    """The system database was closed (``destroy()``); nothing may use it any more."""


def closed_error() -> SystemDatabaseClosed:
    """The error of an operation refused at the gate."""
    return SystemDatabaseClosed("the system database is closed (destroy() ran)")


def interrupted_error(cause: BaseException) -> SystemDatabaseClosed:
    """The error of an operation a shutdown ended (in the database, or while it retried)."""
    closed = SystemDatabaseClosed("interrupted by shutdown")
    closed.__cause__ = cause
    return closed


class Gate:
    """The engine, this process's SQLite write turn, and the operations in flight on them."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        sqlite_synchronous: str,
        max_connections: int | None = None,
        client_retries: int = DEFAULT_CLIENT_RETRIES,
    ) -> None:
        self.url = normalize_url(url)
        self.sqlite = is_sqlite(self.url)
        self.engine = make_engine(
            self.url,
            pool_size=pool_size,
            sqlite_synchronous=sqlite_synchronous,
            should_stop=self.stopping,
            max_connections=max_connections,
        )
        #: Retries transient errors of every operation behind this gate (:mod:`._db_retry`);
        #: a shutdown ends its backoffs (interrupt() and drain() wake it).
        self.retrier = Retrier(
            "system",
            is_closing=self.stopping,
            closed=interrupted_error,
            client_retries=client_retries,
        )
        self._read_engine = self.engine.execution_options(spindle_read=True)
        #: The gate's lock, taken directly on the hot path (cheaper than the Condition's
        #: Python-level __enter__); notify/wait go through :attr:`cond`, built on it.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        #: Operations admitted and not yet done: key -> the DBAPI connection to interrupt
        #: (None until the operation holds one). Read and written under :attr:`lock`.
        self.in_flight: dict[int, Any] = {}
        #: Set by close() or interrupt(): new operations are refused. Under :attr:`lock`.
        self.closing = False
        #: Set once close() drained (or gave up waiting): nothing may be parked any more.
        self.closed = False
        #: SQLite has one writer at a time. Writers of this process queue on this lock, not
        #: in SQLite's busy handler, which sleeps (1, 2, 5, 10 ... 100 ms) between retries.
        self.write_lock = threading.Lock() if self.sqlite else None

    def stopping(self) -> bool:
        """True once writers must stop waiting for another process's lock (interrupt)."""
        return self.closing

    @contextlib.contextmanager
    def transaction(self, *, read: bool = False) -> Iterator[Connection]:
        """A connection in a transaction, behind the gate; commits when the block ends.

        Raises :class:`SystemDatabaseClosed` once the gate is closing, and when a shutdown
        interrupted the operation in the database. ``read``: a read-only transaction (on
        SQLite a plain ``BEGIN``, not waiting for the write turn).
        """
        with self.cond:
            if self.closing:
                raise closed_error()
            token = object()
            self.in_flight[id(token)] = None
        lock = None if read else self.write_lock
        held = False
        try:
            if lock is not None:
                # Bounded like busy_timeout: past it, SQLite's own busy handling takes over.
                held = lock.acquire(timeout=WRITE_LOCK_TIMEOUT)
            engine = self._read_engine if read else self.engine
            with engine.connect() as conn:
                # In flight before BEGIN: a writer waiting there for another process's
                # write lock is one that interrupt() must reach.
                with self.cond:
                    self.in_flight[id(token)] = conn.connection.dbapi_connection
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            if self.closing:
                raise SystemDatabaseClosed("interrupted by shutdown") from exc
            raise
        finally:
            if held:
                lock.release()  # type: ignore[union-attr]
            with self.cond:
                del self.in_flight[id(token)]
                self.cond.notify_all()

    def interrupt(self) -> int:
        """Refuse new operations and cancel the ones blocked in the database now.

        Returns how many in-flight operations were interrupted.
        """
        with self.cond:
            self.closing = True
            conns = [c for c in self.in_flight.values() if c is not None]
        self.retrier.wake()
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

    def drain(self, timeout: float) -> int:
        """Refuse new operations and wait (at most ``timeout``) for those in flight.

        Returns how many were still in flight when it stopped waiting. The engine stays
        open: the caller disposes it once it gave back what it holds (the hot path's).
        """
        deadline = time.monotonic() + timeout
        self.retrier.wake()
        with self.cond:
            self.closing = True
            while self.in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            remaining = len(self.in_flight)
            self.closed = True
        return remaining

    def connections_in_flight(self) -> int:
        """How many operations in flight hold a connection now (for tests and diagnostics)."""
        with self.lock:
            return sum(c is not None for c in self.in_flight.values())

    def operations_in_flight(self) -> int:
        """How many operations were admitted and are not done yet."""
        with self.lock:
            return len(self.in_flight)
