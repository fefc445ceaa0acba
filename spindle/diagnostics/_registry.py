"""The live thread registry: every runtime thread and stop event, with its lifecycle."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._events import LifecycleEvent
from ._info import RegistrySnapshot, StopEventInfo, ThreadInfo
from ._kinds import EventType, JoinOutcome, ThreadGroup, ThreadKind, ThreadState
from ._stacks import current_frames, top_frames
from ._waiting import RUNNING, waiting_on

logger = logging.getLogger("spindle.diagnostics")

Listener = Callable[[LifecycleEvent], None]

#: Prefixes of thread names that only the runtime creates: a live thread with one of these
#: names that is not in the registry is a lint (a thread made outside the one door).
RUNTIME_NAME_PREFIXES = ("dbos-", "spindle-")


class StopEvent(threading.Event):
    """A ``threading.Event`` that both wakes and stops one thread, and reports when it is set."""

    def __init__(self, registry: ThreadRegistry, stop_id: int, name: str, group: ThreadGroup):
        super().__init__()
        self._registry = registry
        self.stop_id = stop_id
        self.name = name
        self.group = group
        self.set_mono: float | None = None
        # Guards _callbacks and _fired together: "already set?" and "append / take the list"
        # must be one step, or a callback added while set() runs would run twice (or never).
        # Callbacks themselves run outside it, so one may add another or call set() again.
        self._callbacks_lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._fired = False

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the event is set (at once if it already is).

        For threads that block on something other than this event (a condition, a socket,
        an event loop): the callback wakes them. Each callback runs exactly once.
        """
        with self._callbacks_lock:
            if not self._fired:
                self._callbacks.append(callback)
                return
        self._run_callback(callback)

    def set(self) -> None:
        """Set the event; the first set is recorded as ``stop_event.set``."""
        with self._callbacks_lock:
            first = not self._fired
            self._fired = True
            callbacks, self._callbacks = self._callbacks, []
            # Inside the lock: a callback added after this sees _fired and runs itself,
            # by which time the flag it may check (is_set) is already true.
            super().set()
        if first:
            self._registry._stop_event_was_set(self)
            for callback in callbacks:
                self._run_callback(callback)

    @staticmethod
    def _run_callback(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            logger.exception("spindle: stop-event callback %r failed", callback)


@dataclass(slots=True)
class StopEventRecord:
    """A registered stop event and the thread it stops, if any."""

    stop_id: int
    name: str
    group: ThreadGroup
    event: StopEvent
    created_mono: float
    thread_record_id: int | None = None


@dataclass(slots=True)
class ThreadRecord:
    """The registry's mutable record of one thread (read it through :meth:`snapshot`)."""

    record_id: int
    name: str
    kind: ThreadKind
    group: ThreadGroup | None
    parent_id: int | None
    thread: threading.Thread | None
    stop: StopEvent | None
    created_wall: float
    created_mono: float
    state: ThreadState = ThreadState.CREATED
    ident: int | None = None
    native_id: int | None = None
    started_mono: float | None = None
    stopped_mono: float | None = None
    joined_mono: float | None = None
    join_outcome: JoinOutcome | None = None
    join_duration: float | None = None
    exception: str | None = None
    status_note: str | None = None
    captured_stack: list[dict[str, Any]] | None = None
    events: deque[LifecycleEvent] = field(default_factory=lambda: deque(maxlen=64))
    # Set by lint() the first time it reports this thread stuck, so it warns once, not on
    # every dashboard refresh.
    stuck_reported: bool = False
    #: What a pool thread is running now: (workflow id, workflow name, step function id,
    #: step name), the step half None between steps; None while it waits for work. One
    #: tuple assigned at once (by the thread itself), so a reader never sees half of it.
    work: tuple[str, str, int | None, str | None] | None = None
    #: True for a pool thread (executor worker): with no ``work`` it is ``idle``.
    pooled: bool = False

    @property
    def alive(self) -> bool:
        """True until the thread body has returned."""
        return self.state.alive


class ThreadRegistry:
    """Thread-safe registry of runtime threads, their stop events and lifecycle events.

    Memory is bounded: live records, plus the last ``max_exited`` exited records, plus at
    most ``max_events_per_thread`` events per record.
    """

    def __init__(
        self,
        *,
        max_exited: int = 1000,
        max_events_per_thread: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_exited < 0:
            raise ValueError("max_exited must be >= 0")
        if max_events_per_thread < 1:
            raise ValueError("max_events_per_thread must be >= 1")
        self._clock = clock
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._live: dict[int, ThreadRecord] = {}
        self._by_ident: dict[int, ThreadRecord] = {}
        self._exited: deque[ThreadRecord] = deque(maxlen=max_exited)
        self._stop_events: dict[int, StopEventRecord] = {}
        self._listeners: list[Listener] = []
        self._max_events = max_events_per_thread
        self._failed_listeners: set[int] = set()
        # Foreign threads get ids from the same counter, stable across snapshots while the
        # thread lives: key (ident, native_id) because idents are reused after a thread dies.
        self._foreign: dict[tuple[int, int | None], tuple[int, float, float]] = {}
        # Each registered thread finds its own record here without the lock: the hot path
        # (a workflow or step starting on an executor worker) reads it, nothing else.
        self._local = threading.local()
        #: The join shutdown is waiting on now: (record, start mono, timeout), or None.
        #: Read by the live shutdown view; written by the one thread that joins.
        self.joining: tuple[ThreadRecord, float, float] | None = None

    @property
    def max_exited(self) -> int:
        """How many exited records are retained."""
        return self._exited.maxlen or 0

    # -- listeners -----------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event from now on; returns a function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def emit(
        self, type: EventType, record: ThreadRecord | None = None, **attrs: Any
    ) -> LifecycleEvent:
        """Record an event (on the record when given) and hand it to every listener.

        Listeners never raise into the caller: observability must not break the runtime.
        """
        with self._lock:
            event = LifecycleEvent(
                seq=next(self._seq),
                type=type,
                wall_time=time.time(),
                mono=self._clock(),
                record_id=record.record_id if record else None,
                thread_name=record.name if record else None,
                thread_ident=record.ident if record else None,
                kind=record.kind if record else None,
                group=record.group if record else None,
                attrs=attrs,
            )
            if record is not None:
                record.events.append(event)
            listeners = tuple(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                # Log once per listener, as the OTel SDK does, so a broken exporter cannot
                # flood the log from a hot path.
                if id(listener) not in self._failed_listeners:
                    self._failed_listeners.add(id(listener))
                    logger.exception("spindle diagnostics listener %r failed", listener)
        return event

    # -- registration --------------------------------------------------------------------

    def new_stop_event(self, name: str, group: ThreadGroup) -> StopEvent:
        """Create and register the stop event of a thread about to be made."""
        with self._lock:
            stop_id = next(self._ids)
            event = StopEvent(self, stop_id, name, group)
            self._stop_events[stop_id] = StopEventRecord(stop_id, name, group, event, self._clock())
        self.emit(
            EventType.STOP_EVENT_REGISTER, None, stop_id=stop_id, name=name, group=group.value
        )
        return event

    def register_thread(
        self,
        thread: threading.Thread,
        *,
        kind: ThreadKind,
        group: ThreadGroup | None,
        parent: ThreadRecord | None = None,
        stop: StopEvent | None = None,
    ) -> ThreadRecord:
        """Register a created (not yet started) thread."""
        with self._lock:
            record = ThreadRecord(
                record_id=next(self._ids),
                name=thread.name,
                kind=kind,
                group=group,
                parent_id=parent.record_id if parent else None,
                thread=thread,
                stop=stop,
                created_wall=time.time(),
                created_mono=self._clock(),
                events=deque(maxlen=self._max_events),
            )
            self._live[record.record_id] = record
            if stop is not None:
                self._stop_events[stop.stop_id].thread_record_id = record.record_id
        self.emit(
            EventType.SPAWN,
            record,
            parent_id=record.parent_id,
            stop_id=stop.stop_id if stop else None,
        )
        return record

    def adopt_current_thread(
        self,
        *,
        kind: ThreadKind,
        group: ThreadGroup | None,
        parent: ThreadRecord | None = None,
    ) -> ThreadRecord:
        """Register the calling thread, already running (executor workers register so)."""
        record = self.register_thread(
            threading.current_thread(), kind=kind, group=group, parent=parent
        )
        self.mark_started(record)
        return record

    def mark_started(self, record: ThreadRecord) -> None:
        """Called from inside the thread as its body begins."""
        with self._lock:
            record.ident = threading.get_ident()
            record.native_id = threading.get_native_id()
            record.started_mono = self._clock()
            record.state = ThreadState.RUNNING
            self._by_ident[record.ident] = record
        self._local.record = record
        self.emit(EventType.START, record, native_id=record.native_id)

    def own_record(self) -> ThreadRecord | None:
        """The calling thread's record, if it is registered (lock-free: for hot paths)."""
        return getattr(self._local, "record", None)

    def info(self, record: ThreadRecord) -> ThreadInfo:
        """An immutable view of one record now (its workflow and step, ``idle``...)."""
        with self._lock:
            return self._info(record)

    def work_state(self) -> tuple[object, ...]:
        """What every live pool thread runs now: changes without an event, so a cached
        snapshot must compare this too (cheap: no ThreadInfo is built)."""
        with self._lock:
            return tuple(r.work for r in self._live.values() if r.pooled)

    def set_joining(self, record: ThreadRecord | None, timeout: float = 0.0) -> None:
        """Say which thread a shutdown join is waiting on now (None: no join in progress)."""
        self.joining = None if record is None else (record, self._clock(), timeout)

    def mark_exited(self, record: ThreadRecord, error: BaseException | None = None) -> None:
        """Called from inside the thread as its body ends, with the exception if it died."""
        with self._lock:
            record.stopped_mono = self._clock()
            record.state = ThreadState.EXITED_ERROR if error else ThreadState.EXITED_OK
            if error is not None:
                record.exception = f"{type(error).__name__}: {error}"
            self._retire(record)
        self.emit(
            EventType.EXIT,
            record,
            outcome=record.state.value,
            exception=record.exception,
        )

    def mark_joined(self, record: ThreadRecord, outcome: JoinOutcome, duration: float) -> None:
        """Record how a join of this thread ended."""
        with self._lock:
            record.joined_mono = self._clock()
            record.join_outcome = outcome
            record.join_duration = duration
            if outcome is JoinOutcome.TIMEOUT and record.alive:
                record.state = ThreadState.LEAKED
            work = record.work
        # A leaked executor names the workflow and step it is stuck in (report, rules, spans).
        extra: dict[str, Any] = {}
        if work is not None:
            extra.update(workflow_id=work[0], workflow_name=work[1])
        if work is not None and work[3] is not None:
            extra.update(step_id=work[2], step_name=work[3])
        self.emit(EventType.JOIN, record, outcome=outcome.value, duration=duration, **extra)

    def set_status(self, record: ThreadRecord, note: str | None) -> None:
        """A thread's own word on what it is doing (e.g. ``reconnecting``); None clears it."""
        with self._lock:
            if record.status_note == note:
                return
            record.status_note = note
        self.emit(EventType.STATUS, record, note=note)

    def attach_stack(self, record: ThreadRecord, frames: list[dict[str, Any]], reason: str) -> None:
        """Keep a captured stack on the record (a stuck or leaked thread)."""
        with self._lock:
            record.captured_stack = frames
        self.emit(EventType.STACK_CAPTURED, record, reason=reason, frames=len(frames))

    def _stop_event_was_set(self, event: StopEvent) -> None:
        with self._lock:
            event.set_mono = self._clock()
            entry = self._stop_events.get(event.stop_id)
            record = None
            if entry is not None and entry.thread_record_id is not None:
                # The record is named on the event even when its thread has already exited:
                # the rules need to know which thread's stop event this was.
                record = self._live.get(entry.thread_record_id)
                if record is None:
                    record = next(
                        (r for r in self._exited if r.record_id == entry.thread_record_id), None
                    )
                if record is not None and record.alive:
                    record.state = ThreadState.STOPPING
        self.emit(
            EventType.STOP_EVENT_SET,
            record,
            stop_id=event.stop_id,
            name=event.name,
            stop_group=event.group.value,
        )

    def _retire(self, record: ThreadRecord) -> None:
        # Caller holds the lock. Exited records move to a bounded deque so a process that
        # ran a million threads keeps only the last max_exited of them.
        self._live.pop(record.record_id, None)
        if record.ident is not None and self._by_ident.get(record.ident) is record:
            del self._by_ident[record.ident]
        self._exited.append(record)
        if record.stop is not None:
            entry = self._stop_events.get(record.stop.stop_id)
            # A set stop event of an exited thread has told its story; forget it.
            if entry is not None and entry.event.is_set():
                del self._stop_events[record.stop.stop_id]
        self._stop_events_of_retired(record)

    def _stop_events_of_retired(self, record: ThreadRecord) -> None:
        # Keep unset stop events of exited threads only while their record is retained,
        # so the lint "stop event never set" can still see them but memory stays bounded.
        if len(self._stop_events) > 4 * (len(self._live) + (self._exited.maxlen or 0)) + 16:
            retained = {r.record_id for r in self._exited} | set(self._live)
            for stop_id in [
                s
                for s, e in self._stop_events.items()
                if e.thread_record_id is not None and e.thread_record_id not in retained
            ]:
                del self._stop_events[stop_id]

    # -- queries -------------------------------------------------------------------------

    def now(self) -> float:
        """The registry's clock (monotonic seconds)."""
        return self._clock()

    def live_records(self) -> list[ThreadRecord]:
        """Records of threads that have not exited (the caller must not mutate them)."""
        with self._lock:
            return list(self._live.values())

    def records(self) -> Iterator[ThreadRecord]:
        """Live and retained exited records."""
        with self._lock:
            items = [*self._live.values(), *self._exited]
        return iter(items)

    def record_for_ident(self, ident: int) -> ThreadRecord | None:
        """The live record of the thread with this ``threading.get_ident()``."""
        with self._lock:
            return self._by_ident.get(ident)

    def get(self, record_id: int) -> ThreadRecord | None:
        """A live or retained record by registry id."""
        with self._lock:
            record = self._live.get(record_id)
            if record is not None:
                return record
            for r in self._exited:
                if r.record_id == record_id:
                    return r
        return None

    def stop_event_records(self) -> list[StopEventRecord]:
        """Every registered stop event still retained."""
        with self._lock:
            return list(self._stop_events.values())

    def unset_stop_events(self) -> list[StopEventRecord]:
        """Registered stop events that were never set."""
        with self._lock:
            return [e for e in self._stop_events.values() if not e.event.is_set()]

    def foreign_threads(self) -> list[tuple[int, threading.Thread]]:
        """Live threads from ``threading.enumerate()`` that are not registered, with their ids.

        The ids come from the registry's counter and stay the same while the thread lives.
        """
        threads = threading.enumerate()
        with self._lock:
            return self._foreign_locked(threads)

    def _foreign_locked(
        self, threads: list[threading.Thread]
    ) -> list[tuple[int, threading.Thread]]:
        # Caller holds the lock. A started thread whose body has not yet called mark_started
        # has no ident in _by_ident: match records by Thread object too, or it would flicker
        # as foreign for an instant.
        registered = {id(r.thread) for r in self._live.values() if r.thread is not None}
        out: list[tuple[int, threading.Thread]] = []
        seen: set[tuple[int, int | None]] = set()
        for t in threads:
            if t.ident is None or id(t) in registered or t.ident in self._by_ident:
                continue
            key = (t.ident, t.native_id)
            seen.add(key)
            entry = self._foreign.get(key)
            if entry is None:
                entry = (next(self._ids), time.time(), self._clock())
                self._foreign[key] = entry
            out.append((entry[0], t))
        for key in [k for k in self._foreign if k not in seen]:
            del self._foreign[key]
        return out

    def snapshot(
        self, *, include_foreign: bool = False, with_waiting: bool = True
    ) -> RegistrySnapshot:
        """A consistent view of every record and stop event, taken under the lock.

        ``include_foreign`` adds unregistered live threads (kind ``foreign``);
        ``with_waiting`` reads each live thread's top frames to fill ``waiting_on`` and shows
        a running thread that is blocked as ``waiting``.
        """
        frames = current_frames() if with_waiting else {}
        enumerated = threading.enumerate() if include_foreign else []
        with self._lock:
            threads = [
                self._info(r, frames.get(r.ident) if r.ident is not None else None, with_waiting)
                for r in [*self._live.values(), *self._exited]
            ]
            if include_foreign:
                for fid, t in self._foreign_locked(enumerated):
                    threads.append(self._foreign_info(fid, t, frames, with_waiting))
            stops = tuple(
                StopEventInfo(
                    e.stop_id,
                    e.name,
                    e.group,
                    e.event.is_set(),
                    e.event.set_mono,
                    e.thread_record_id,
                )
                for e in self._stop_events.values()
            )
            return RegistrySnapshot(time.time(), self._clock(), tuple(threads), stops)

    def _foreign_info(
        self, fid: int, t: threading.Thread, frames: dict[int, Any], with_waiting: bool
    ) -> ThreadInfo:
        # Caller holds the lock.
        wait = None
        state = ThreadState.RUNNING
        if with_waiting and t.ident in frames:
            wait = waiting_on(top_frames(frames[t.ident], 8))
            if wait != RUNNING:
                state = ThreadState.WAITING
        _fid, first_wall, first_mono = self._foreign[(t.ident or 0, t.native_id)]
        return ThreadInfo(
            record_id=fid,
            name=t.name,
            kind=ThreadKind.FOREIGN,
            group=None,
            parent_id=None,
            state=state,
            ident=t.ident,
            native_id=t.native_id,
            daemon=t.daemon,
            stop_event_set=None,
            created_wall=first_wall,
            created_mono=first_mono,
            started_mono=None,
            stopped_mono=None,
            joined_mono=None,
            join_outcome=None,
            join_duration=None,
            exception=None,
            status_note=None,
            captured_stack=None,
            events=(),
            waiting_on=wait,
        )

    @staticmethod
    def _info(r: ThreadRecord, frame: Any = None, with_waiting: bool = False) -> ThreadInfo:
        wait = None
        state = r.state
        work = r.work  # read once: the thread may replace it meanwhile
        if r.pooled and work is None and state is ThreadState.RUNNING:
            state = ThreadState.IDLE
        if with_waiting and frame is not None and r.alive:
            wait = waiting_on(top_frames(frame, 8))
            # Only a running thread becomes "waiting": stopping and join-timeout say more.
            if wait != RUNNING and state is ThreadState.RUNNING:
                state = ThreadState.WAITING
        return ThreadInfo(
            record_id=r.record_id,
            name=r.name,
            kind=r.kind,
            group=r.group,
            parent_id=r.parent_id,
            state=state,
            ident=r.ident,
            native_id=r.native_id,
            daemon=r.thread.daemon if r.thread is not None else None,
            stop_event_set=r.stop.is_set() if r.stop is not None else None,
            created_wall=r.created_wall,
            created_mono=r.created_mono,
            started_mono=r.started_mono,
            stopped_mono=r.stopped_mono,
            joined_mono=r.joined_mono,
            join_outcome=r.join_outcome,
            join_duration=r.join_duration,
            exception=r.exception,
            status_note=r.status_note,
            captured_stack=list(r.captured_stack) if r.captured_stack else None,
            events=tuple(r.events),
            waiting_on=wait,
            workflow_id=work[0] if work else None,
            workflow_name=work[1] if work else None,
            step_id=work[2] if work else None,
            step_name=work[3] if work else None,
        )
