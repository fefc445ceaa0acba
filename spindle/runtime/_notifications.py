"""The notification listener: wakes ``recv`` / ``get_event`` callers when their row arrives.

Callers wait on a :class:`Waiter` registered under a key (``("msg", workflow_id, topic)`` or
``("evt", workflow_id, key)``). One supervised thread of kind NOTIFICATION_LISTENER wakes
them:

* PostgreSQL: a dedicated psycopg connection (not from the pool) LISTENs on the channels
  the triggers of migration v2 NOTIFY; a notification wakes the waiters of its key at once.
* SQLite: a polling thread checks the keys waited on every
  ``notification_polling_interval_sec``; sends made in this process wake waiters directly.

A wake-up is only a hint: a woken caller always re-reads the table, and so does a caller
whose timeout ran out, so a lost or spurious notification costs latency, never a message.
After a reconnection every waiter is woken, because NOTIFYs sent while the connection was
down are lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import ConnStatus
from sqlalchemy.engine import make_url

from spindle.diagnostics import Clock, StopEvent, ThreadKind, ThreadRecord

from ._clock_wait import wait_on_clock
from ._messaging_db import MessagingDatabase
from ._schema import NOTIFICATIONS_CHANNEL, STREAMS_CHANNEL, WORKFLOW_EVENTS_CHANNEL
from ._supervisor import Supervised, Supervisor
from ._sysdb_gate import SystemDatabaseClosed

logger = logging.getLogger("spindle")

Key = tuple[str, str, str]

THREAD_NAME = "dbos-notification-listener"

#: Reconnection back-off: from this, doubling, up to the maximum (seconds).
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0


def message_key(workflow_id: str, topic: str) -> Key:
    """The waiter key of messages to ``workflow_id`` on ``topic``."""
    return ("msg", workflow_id, topic)


def stream_key(workflow_id: str, key: str) -> Key:
    """The waiter key of the values written to the stream ``key`` of ``workflow_id``."""
    return ("stream", workflow_id, key)


def event_key(workflow_id: str, key: str) -> Key:
    """The waiter key of the event ``key`` of ``workflow_id``."""
    return ("evt", workflow_id, key)


class Waiter:
    """One caller waiting for one key: wakes a thread, or an awaiting coroutine on its loop."""

    __slots__ = ("_async_event", "_event", "_hook", "_loop", "_owner", "key")

    def __init__(
        self, owner: Waiters, key: Key, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.key = key
        self._owner = owner
        self._event = threading.Event()
        self._loop = loop
        self._async_event = asyncio.Event() if loop is not None else None
        # Called on notify while a wait on an injected clock is blocked (tests' FakeClock).
        self._hook: Callable[[], None] | None = None

    def notify(self) -> None:
        """Wake the caller (from any thread)."""
        self._event.set()
        hook = self._hook
        if hook is not None:
            hook()
        if self._loop is not None and self._async_event is not None:
            try:
                self._loop.call_soon_threadsafe(self._async_event.set)
            except RuntimeError:
                pass  # the loop closed: nobody awaits any more

    def clear(self) -> None:
        """Forget earlier wake-ups; call before re-reading the table, never after."""
        self._event.clear()
        if self._async_event is not None:
            self._async_event.clear()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if woken."""
        self._owner._parked(self, True)
        try:
            return self._event.wait(timeout)
        finally:
            self._owner._parked(self, False)

    def wait_clock(self, clock: Clock, timeout: float) -> bool:
        """:meth:`wait`, ``timeout`` measured in ``clock`` time (a test's fake clock)."""

        def subscribe(callback: Callable[[], None]) -> Callable[[], None]:
            self._hook = callback
            if self._event.is_set():
                callback()

            def remove() -> None:
                self._hook = None

            return remove

        self._owner._parked(self, True)
        try:
            return wait_on_clock(clock, self._event.is_set, subscribe, timeout)
        finally:
            self._owner._parked(self, False)

    async def wait_async(self, timeout: float) -> bool:
        """Await up to ``timeout`` seconds on the waiter's loop, holding no thread."""
        assert self._async_event is not None, "an async wait needs a waiter made with its loop"
        self._owner._parked(self, True)
        try:
            await asyncio.wait_for(self._async_event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._owner._parked(self, False)


class Waiters:
    """The map of keys to the callers waiting on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[Key, set[Waiter]] = {}
        # Keys with a caller blocked in its wait now (after reading an empty table): what
        # tests synchronise on instead of sleeping, and what the dashboard can count.
        self._parked_cond = threading.Condition(self._lock)
        self._parked_keys: dict[Key, int] = {}
        self.closed = False

    def _parked(self, waiter: Waiter, parked: bool) -> None:
        with self._parked_cond:
            n = self._parked_keys.get(waiter.key, 0) + (1 if parked else -1)
            if n:
                self._parked_keys[waiter.key] = n
            else:
                self._parked_keys.pop(waiter.key, None)
            self._parked_cond.notify_all()

    def wait_parked(self, key: Key, timeout: float) -> bool:
        """Wait until a caller is blocked waiting on ``key``; True if one is within
        ``timeout``."""
        with self._parked_cond:
            return self._parked_cond.wait_for(lambda: key in self._parked_keys, timeout)

    def register(self, key: Key, loop: asyncio.AbstractEventLoop | None = None) -> Waiter:
        """A new waiter on ``key``; register it BEFORE reading the table (no lost wake-up)."""
        waiter = Waiter(self, key, loop)
        with self._lock:
            self._by_key.setdefault(key, set()).add(waiter)
            closed = self.closed
        if closed:
            waiter.notify()
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        """Forget a waiter (its caller returned)."""
        with self._lock:
            group = self._by_key.get(waiter.key)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._by_key[waiter.key]

    def notify(self, key: Key) -> int:
        """Wake every caller waiting on ``key``; returns how many."""
        with self._lock:
            waiters = list(self._by_key.get(key, ()))
        for w in waiters:
            w.notify()
        return len(waiters)

    def notify_all(self) -> None:
        """Wake every caller: each re-reads the table (after a reconnection, at shutdown)."""
        with self._lock:
            waiters = [w for group in self._by_key.values() for w in group]
        for w in waiters:
            w.notify()

    def keys(self) -> list[Key]:
        """The keys waited on now."""
        with self._lock:
            return list(self._by_key)

    def close(self) -> None:
        """The listener stopped: wake everyone; waits from now on return at once."""
        with self._lock:
            self.closed = True
        self.notify_all()


class NotificationListener:
    """The supervised listener thread and the waiters it wakes (base of both backends)."""

    #: True when this process's own commits must wake local waiters directly (SQLite).
    local_wakeups = False

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.waiters = Waiters()
        self.thread: Supervised | None = None
        self._ready = threading.Event()
        self._record: ThreadRecord | None = None

    def start(self) -> None:
        """Spawn the thread; return once it listens (a handshake on an Event, not a sleep).

        The thread also signals readiness when its first attempt failed (it then keeps
        reconnecting in the background, and callers fall back on their timeouts meanwhile),
        so ``launch()`` never hangs on an unreachable database.
        """
        self.thread = self._supervisor.spawn(
            ThreadKind.NOTIFICATION_LISTENER, THREAD_NAME, self._body
        )
        self._ready.wait()

    def committed(self, key: Key) -> None:
        """This process committed a row for ``key``: wake local waiters if the backend needs it."""
        if self.local_wakeups:
            self.waiters.notify(key)

    def interrupt(self) -> None:
        """Shutdown phase 8: end the thread's blocking wait (by closing its connection)."""
        self._cleanup_connections()

    def _cleanup_connections(self) -> None:
        """What :meth:`interrupt` does; DBOS's name, overridden by each backend."""

    def _set_status(self, note: str | None) -> None:
        if self._record is not None:
            self._supervisor.registry.set_status(self._record, note)

    def _body(self, stop: StopEvent) -> None:
        self._record = self._supervisor.registry.record_for_ident(threading.get_ident())
        try:
            self._run(stop)
        finally:
            # Callers outside a workflow (get_event) must not wait for a listener that is gone.
            self.waiters.close()
            self._ready.set()

    def _run(self, stop: StopEvent) -> None:
        raise NotImplementedError


class SQLitePoller(NotificationListener):
    """SQLite has no NOTIFY: poll the keys waited on; local sends wake waiters directly."""

    local_wakeups = True

    def __init__(self, supervisor: Supervisor, db: MessagingDatabase, interval: float) -> None:
        super().__init__(supervisor)
        self._db = db
        self.interval = interval

    def _run(self, stop: StopEvent) -> None:
        self._set_status(f"polling every {self.interval:g}s")
        self._ready.set()
        failing = False
        # The stop event both paces and ends the loop: destroy() never waits an interval.
        while not stop.wait(self.interval):
            keys = self.waiters.keys()
            if not keys:
                continue
            try:
                msgs, evts = self._db.ready_keys(
                    [(w, t) for kind, w, t in keys if kind == "msg"],
                    [(w, k) for kind, w, k in keys if kind == "evt"],
                )
            except SystemDatabaseClosed:
                return
            except Exception:
                if not failing:  # log once per failure streak
                    logger.exception("spindle: notification polling failed; will retry")
                    self._set_status("poll failing")
                failing = True
                continue
            if failing:
                failing = False
                self._set_status(f"polling every {self.interval:g}s")
            for w, t in msgs:
                self.waiters.notify(message_key(w, t))
            for w, k in evts:
                self.waiters.notify(event_key(w, k))


def libpq_conninfo(url: str) -> str:
    """A libpq URL for psycopg from the system database's SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresListener(NotificationListener):
    """LISTEN on a dedicated psycopg connection; reconnect with back-off when it drops.

    The thread blocks in a selector on the connection's socket and on a wake-up socket pair.
    The stop event and ``_cleanup_connections`` write to the pair, so the thread never
    waits out a timeout to notice shutdown. Only the thread touches the connection while it
    is open, except ``_cleanup_connections``, which closes it under ``_conn_lock`` (held by
    the thread only while it reads, never while it waits), so libpq is never used by two
    threads at once.
    """

    def __init__(self, supervisor: Supervisor, url: str) -> None:
        super().__init__(supervisor)
        self._conninfo = libpq_conninfo(url)
        self._conn_lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closing = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._state = threading.Condition()
        #: Backend pid of the LISTEN connection (None while disconnected); tests terminate it.
        self.backend_pid: int | None = None
        #: Successful connections so far; a reconnection increments it.
        self.connections = 0
        #: Faults recorded (connection lost or failed to connect).
        self.faults = 0
        #: Test hook, run by the thread before each reconnection attempt.
        self.before_reconnect: Callable[[], None] | None = None

    def wait_connected(self, count: int, timeout: float) -> bool:
        """Wait until ``connections >= count``; True if it happened within ``timeout``."""
        with self._state:
            return self._state.wait_for(lambda: self.connections >= count, timeout)

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the buffer is full (a wake-up is pending anyway) or the pair is closed

    def _cleanup_connections(self) -> None:
        self._closing = True
        self._poke()
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("spindle: closing the listener connection failed", exc_info=True)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=5,
            # A half-open TCP connection would hide lost NOTIFYs forever: let the kernel probe.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        try:
            conn.execute(f"LISTEN {NOTIFICATIONS_CHANNEL}")
            conn.execute(f"LISTEN {WORKFLOW_EVENTS_CHANNEL}")
            conn.execute(f"LISTEN {STREAMS_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        with self._conn_lock:
            if self._closing:
                conn.close()
                raise psycopg.OperationalError("the listener is shutting down")
            self._conn = conn
        return conn

    def _run(self, stop: StopEvent) -> None:
        stop.add_callback(self._poke)
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        backoff = BACKOFF_INITIAL
        try:
            while not stop.is_set() and not self._closing:
                if self.connections or self.faults:
                    hook = self.before_reconnect
                    if hook is not None:
                        hook()
                try:
                    conn = self._connect()
                except Exception as exc:
                    if stop.is_set() or self._closing:
                        return
                    self._fault("could not connect", exc, backoff)
                    self._ready.set()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_INITIAL
                reconnected = self.connections > 0 or self.faults > 0
                with self._state:
                    self.backend_pid = conn.info.backend_pid
                    self.connections += 1
                    self._state.notify_all()
                self._set_status("listening")
                self._ready.set()
                if reconnected:
                    logger.info("spindle: notification listener reconnected and listening")
                    # NOTIFYs sent while we were down are lost: every waiter re-reads.
                    self.waiters.notify_all()
                try:
                    self._listen(stop, conn, selector)
                except Exception as exc:
                    if stop.is_set() or self._closing:
                        return
                    self._fault("lost its connection", exc, backoff)
                    self._drop(conn)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            selector.close()
            self._cleanup_connections()
            self._wake_r.close()
            self._wake_w.close()

    def _listen(
        self, stop: StopEvent, conn: psycopg.Connection[Any], selector: selectors.BaseSelector
    ) -> None:
        key = selector.register(conn.fileno(), selectors.EVENT_READ)
        try:
            while True:
                selector.select()  # no timeout: the stop event and phase 8 poke the pair
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
                if stop.is_set() or self._closing:
                    return
                keys: list[Key] = []
                with self._conn_lock:
                    if self._conn is not conn or conn.closed:
                        raise psycopg.OperationalError("the listener connection was closed")
                    pgconn = conn.pgconn
                    pgconn.consume_input()  # raises when the server dropped us
                    while (note := pgconn.notifies()) is not None:
                        parsed = _parse(note.relname, note.extra)
                        if parsed is not None:
                            keys.append(parsed)
                    if pgconn.status != ConnStatus.OK:
                        raise psycopg.OperationalError("the listener connection went bad")
                for k in keys:
                    self.waiters.notify(k)
        finally:
            selector.unregister(key.fileobj)

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        with self._conn_lock:
            if self._conn is conn:
                self._conn = None
        with self._state:
            self.backend_pid = None
        try:
            conn.close()
        except Exception:
            pass

    def _fault(self, what: str, exc: BaseException, backoff: float) -> None:
        self.faults += 1
        self._set_status("reconnecting")
        logger.warning(
            "spindle: notification listener %s (%s: %s); reconnecting in %.1fs",
            what,
            type(exc).__name__,
            " ".join(str(exc).split()),  # libpq's messages span lines; a log line must not
            backoff,
        )


def _parse(channel: bytes | str, payload: bytes | str) -> Key | None:
    """The waiter key of one NOTIFY (payload: a JSON array [workflow id, topic or key])."""
    name = channel.decode() if isinstance(channel, bytes) else channel
    try:
        data = json.loads(payload)
        workflow_id, sub = str(data[0]), data[1]
    except (ValueError, TypeError, IndexError, KeyError):
        logger.debug("spindle: ignoring a malformed notification %r", payload)
        return None
    if sub is None:
        return None
    if name == NOTIFICATIONS_CHANNEL:
        return message_key(workflow_id, str(sub))
    if name == WORKFLOW_EVENTS_CHANNEL:
        return event_key(workflow_id, str(sub))
    if name == STREAMS_CHANNEL:
        return stream_key(workflow_id, str(sub))
    return None


def make_listener(
    supervisor: Supervisor, db: MessagingDatabase, url: str, polling_interval: float
) -> NotificationListener:
    """The listener for the system database's backend."""
    if db.sqlite:
        return SQLitePoller(supervisor, db, polling_interval)
    return PostgresListener(supervisor, url)
