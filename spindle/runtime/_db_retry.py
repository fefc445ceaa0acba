"""Database faults: which errors are transient, and retrying them until the database answers.

A production database drops connections (a failover, ``pg_terminate_backend``, an idle
timeout), aborts transactions (serialization failures, deadlocks), runs out of disk and
times out a pool. None of that is a workflow's outcome: every system-database operation
classifies the error it met (:func:`is_transient`) and retries a transient one with
bounded exponential backoff and jitter (:class:`Retrier`), interruptible by shutdown.

How long to keep going depends on who is waiting:

* inside a workflow, or on one of the runtime's own threads (named ``dbos-...``), without
  limit: a workflow interrupted by an outage keeps retrying until the database is back
  and is never abandoned in the live process (shutdown ends the wait, and the workflow
  stays PENDING for recovery);
* a client call from the application's own thread (``start_workflow``, ``send``,
  ``get_result``, ``list_workflows``, ...) up to ``sys_db_client_retries`` retries, then
  :class:`DBOSSystemDatabaseUnavailableError` naming the cause.

An outage is logged once when it begins and once when the database answers again, not
once per failed call.
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from ._errors import DBOSSystemDatabaseUnavailableError

logger = logging.getLogger("spindle")

T = TypeVar("T")

#: First backoff, and the cap every later one doubles up to (seconds).
BACKOFF_FIRST = 0.02
BACKOFF_MAX = 1.0
#: Retries a client call makes by default before it raises.
DEFAULT_CLIENT_RETRIES = 10

# SQLite primary result codes (the low byte of an extended code) that a retry can cure.
_SQLITE_TRANSIENT = {
    5,  # SQLITE_BUSY: another connection holds the lock
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    10,  # SQLITE_IOERR (and its extended codes: a full disk often shows as a write error)
    13,  # SQLITE_FULL: database or disk is full
    15,  # SQLITE_PROTOCOL: a WAL lock race
}
# PostgreSQL SQLSTATE classes and codes that a retry can cure.
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "58")  # connection, rollback, resources, I/O
_PG_TRANSIENT_CODES = {"57P01", "57P02", "57P03", "57P05"}  # admin/crash shutdown, starting


def describe(exc: BaseException) -> str:
    """A one-line name of a database error: the driver's class and first message line."""
    orig = getattr(exc, "orig", None)
    inner = orig if isinstance(orig, BaseException) else exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0] if text else ''}".rstrip(": ")


def is_transient(exc: BaseException) -> bool:
    """True for an error a retry can cure: a lost connection, an administrator's or a
    crash's shutdown, a serialization failure or deadlock, SQLite busy or locked, a full
    disk or an I/O error, a pool timeout. Constraint violations, syntax errors, closed
    gates and everything else are permanent."""
    if isinstance(exc, sa.exc.TimeoutError):  # QueuePool limit reached: connections busy
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        return isinstance(orig, BaseException) and _driver_transient(orig)
    return _driver_transient(exc)


def is_rollback(exc: BaseException) -> bool:
    """True for an error that certainly rolled its transaction back before any commit: a
    serialization failure or deadlock (SQLSTATE class 40), SQLite busy or locked. Unlike a
    lost connection, running the transaction again cannot repeat a commit that landed."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is None:
            text = str(orig).lower()
            return "locked" in text or "busy" in text
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    state = getattr(orig, "sqlstate", None)
    return isinstance(state, str) and state.startswith("40")


def _driver_transient(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            # No code (an old driver): judge by the message SQLite gives those errors.
            text = str(exc).lower()
            return any(s in text for s in ("locked", "busy", "disk", "i/o error", "full"))
        return isinstance(exc, sqlite3.OperationalError) and code & 0xFF in _SQLITE_TRANSIENT
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        # Raised by the client, not the server: the connection broke or never opened.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state in _PG_TRANSIENT_CODES or state[:2] in _PG_TRANSIENT_CLASSES


def backoff(attempt: int) -> float:
    """How long to wait before retry number ``attempt`` (1, 2, ...): doubling from
    :data:`BACKOFF_FIRST` up to :data:`BACKOFF_MAX`, jittered over its upper half so many
    waiters failed by one outage do not all come back in the same millisecond."""
    delay: float = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempt - 1, 16))
    return random.uniform(delay / 2, delay)


def _never() -> bool:
    return False


class Retrier:
    """Retries transient errors for one database, logging each outage once.

    ``is_closing`` says the database is closing (the retry then stops and ``closed()`` is
    raised); :meth:`wake` ends every backoff at once (called when it starts closing).
    """

    def __init__(
        self,
        name: str,
        *,
        is_closing: Callable[[], bool],
        closed: Callable[[BaseException], BaseException],
        client_retries: int = DEFAULT_CLIENT_RETRIES,
    ) -> None:
        self.name = name
        self.client_retries = client_retries
        self._is_closing = is_closing
        self._closed = closed
        self._wakeup = threading.Event()
        self._lock = threading.Lock()
        self._counted = threading.Condition(self._lock)
        #: When the current outage began (monotonic), None while the database answers.
        self.outage_since: float | None = None
        #: Outages seen and transient failures met so far (tests and diagnostics read them).
        self.outages = 0
        self.failures = 0
        #: True while the caller runs inside a workflow (set by the runtime, which knows
        #: its context; this layer does not import it).
        self.in_workflow: Callable[[], bool] = _never

    def bounded_here(self) -> bool:
        """True when the caller is the application's own thread outside a workflow (a
        client call): it gets ``client_retries`` retries; inside a workflow and on the
        runtime's threads (named ``dbos-...``) retries go on until the database answers."""
        if self.in_workflow():
            return False
        return not threading.current_thread().name.startswith("dbos-")

    def wake(self) -> None:
        """End every backoff now (the database is closing)."""
        self._wakeup.set()

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """``fn()``, retrying transient errors; see the module docstring for how long."""
        try:
            result = fn()
        except Exception as exc:
            return self.after_failure(operation, fn, exc)
        if self.outage_since is not None:
            self._recovered()
        return result

    def after_failure(self, operation: str, fn: Callable[[], T], exc: Exception) -> T:
        """Go on after ``fn()`` raised ``exc`` once: retry it, or raise what the caller sees.

        The hot path calls this from its own ``except`` so a write that succeeds costs no
        extra frame.
        """
        if not is_transient(exc):
            raise exc
        bounded = self.bounded_here()
        started = time.monotonic()
        attempt = 1
        while True:
            if self._is_closing():
                raise self._closed(exc) from exc
            self._failed(exc)
            if bounded and attempt > self.client_retries:
                raise DBOSSystemDatabaseUnavailableError(
                    operation, attempt, time.monotonic() - started, describe(exc)
                ) from exc
            if self._wakeup.wait(backoff(attempt)) or self._is_closing():
                raise self._closed(exc) from exc
            attempt += 1
            try:
                result = fn()
            except Exception as again:
                if not is_transient(again):
                    raise
                exc = again
                continue
            self._recovered()
            return result

    def wait_for_failures(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` transient failures were met in all (or ``timeout``)."""
        with self._counted:
            return self._counted.wait_for(lambda: self.failures >= count, timeout)

    def note_failure(self, exc: BaseException) -> None:
        """Count a transient failure retried by its caller's own loop (and log an outage's
        start once)."""
        self._failed(exc)

    def note_recovered(self) -> None:
        """The database answered again after failures noted by :meth:`note_failure`."""
        if self.outage_since is not None:
            self._recovered()

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self._counted.notify_all()
            if self.outage_since is not None:
                return
            self.outage_since = time.monotonic()
            self.outages += 1
        logger.warning(
            "spindle: the %s database failed transiently (%s); retrying until it answers",
            self.name,
            describe(exc),
        )

    def _recovered(self) -> None:
        with self._lock:
            since, self.outage_since = self.outage_since, None
        if since is not None:
            logger.warning(
                "spindle: the %s database answers again after %.2f s",
                self.name,
                time.monotonic() - since,
            )


class HasRetrier(Protocol):
    """Anything that knows its database's :class:`Retrier`."""

    @property
    def retrier(self) -> Retrier: ...


F = TypeVar("F", bound=Callable[..., Any])


def retried(fn: F) -> F:
    """Decorate a database operation whose first argument has a ``retrier``: the whole
    operation (its transaction) runs again on a transient error.

    The operations decorated are idempotent or settle a replay themselves (an insert that
    conflicts on retry reads the row it had committed), so an ambiguous commit (the
    connection died after the server committed) is safe to run again.
    """
    name = fn.__qualname__

    @functools.wraps(fn)
    def wrapper(owner: HasRetrier, *args: Any, **kwargs: Any) -> Any:
        return owner.retrier.call(name, lambda: fn(owner, *args, **kwargs))

    return wrapper  # type: ignore[return-value]
