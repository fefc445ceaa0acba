"""State-over-time per thread (VisualVM's thread timeline), sampled from registry events."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spindle.diagnostics import (
    EventType,
    JoinOutcome,
    LifecycleEvent,
    ThreadKind,
    ThreadRegistry,
    ThreadState,
)


@dataclass(slots=True)
class Track:
    """The state changes of one thread, oldest first (bounded)."""

    record_id: int
    name: str
    kind: ThreadKind
    changes: deque[tuple[float, ThreadState]]
    exited_mono: float | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time in one state."""

    start: float
    end: float
    state: ThreadState

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {"start_mono": self.start, "end_mono": self.end, "state": self.state.value}


@dataclass(frozen=True, slots=True)
class Strip:
    """One thread's segments over the window."""

    record_id: int
    name: str
    kind: ThreadKind
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "id": self.record_id,
            "name": self.name,
            "kind": self.kind.value,
            "segments": [s.to_dict() for s in self.segments],
        }


class ThreadHistory:
    """A bounded in-memory history of thread states, fed by a registry listener.

    Bounded three ways: the last ``window_sec`` seconds, at most ``max_threads`` tracks
    (exited threads are dropped first) and ``max_changes`` changes per thread.
    """

    def __init__(
        self,
        registry: ThreadRegistry,
        *,
        window_sec: float = 300.0,
        max_threads: int = 2000,
        max_changes: int = 256,
    ) -> None:
        if window_sec <= 0 or max_threads < 1 or max_changes < 2:
            raise ValueError("window_sec > 0, max_threads >= 1 and max_changes >= 2 are required")
        self.registry = registry
        self.window_sec = window_sec
        self._max_threads = max_threads
        self._max_changes = max_changes
        # Listeners run on whichever thread emitted the event; this lock orders them
        # against readers rendering a page.
        self._lock = threading.Lock()
        self._tracks: OrderedDict[int, Track] = OrderedDict()
        self._remove: Callable[[], None] | None = None
        # The earliest moment the history knows of: the axis starts there on a young app,
        # not a whole window back.
        self._origin: float | None = None

    @property
    def running(self) -> bool:
        """True while the registry listener is installed."""
        return self._remove is not None

    def start(self) -> None:
        """Install the listener and seed every known thread's current state; idempotent."""
        with self._lock:
            if self._remove is not None:
                return
            # Listener first, then seed: an event racing the seed is at worst recorded twice
            # (a zero-length segment), never lost.
            self._remove = self.registry.add_listener(self._on_event)
        now = self.registry.now()
        for record in self.registry.records():
            with self._lock:
                if record.record_id not in self._tracks:
                    track = self._track(record.record_id, record.name, record.kind)
                    since = min(record.started_mono or record.created_mono, now)
                    track.changes.append((since, record.state))
                    self._origin = since if self._origin is None else min(self._origin, since)
                    if not record.state.alive:
                        track.exited_mono = record.stopped_mono
        with self._lock:
            if self._origin is None:
                self._origin = now

    def replay(self, events: list[LifecycleEvent]) -> None:
        """Feed recorded events (a saved report's) as if they had just happened."""
        for event in sorted(events, key=lambda e: e.seq):
            self._on_event(event)

    def observe(
        self, record_id: int, name: str, kind: ThreadKind, state: ThreadState, at: float
    ) -> None:
        """A sampled state (waiting, running, idle: states no lifecycle event announces).

        Threads the registry does not own (foreign) get their track from samples alone.
        """
        self.observe_many([(record_id, name, kind, state)], at)

    def observe_many(
        self, samples: list[tuple[int, str, ThreadKind, ThreadState]], at: float
    ) -> None:
        """:meth:`observe` for a whole sample, under one lock.

        A sample never evicts: a thread without a track gets one only while there is room,
        so a process with more live threads than ``max_threads`` does not churn its tracks
        (and pay an eviction scan per thread) every second.
        """
        with self._lock:
            tracks = self._tracks
            for record_id, name, kind, state in samples:
                track = tracks.get(record_id)
                if track is None:
                    if len(tracks) >= self._max_threads:
                        continue
                    track = self._track(record_id, name, kind)
                if track.exited_mono is not None:
                    continue
                changes = track.changes
                if not changes or changes[-1][1] is not state:
                    changes.append((at, state))
            if samples and (self._origin is None or at < self._origin):
                self._origin = at

    def forget_missing(self, live_ids: set[int], at: float) -> None:
        """Tracks of foreign threads no longer seen end here (they have no exit event)."""
        with self._lock:
            for track in self._tracks.values():
                if (
                    track.kind is ThreadKind.FOREIGN
                    and track.exited_mono is None
                    and track.record_id not in live_ids
                ):
                    track.changes.append((at, ThreadState.EXITED_OK))
                    track.exited_mono = at

    def stop(self) -> None:
        """Remove the listener; idempotent. The recorded history stays readable."""
        with self._lock:
            remove, self._remove = self._remove, None
        if remove is not None:
            remove()

    def _track(self, record_id: int, name: str, kind: ThreadKind) -> Track:
        # Caller holds the lock.
        track = self._tracks.get(record_id)
        if track is None:
            track = Track(record_id, name, kind, deque(maxlen=self._max_changes))
            self._tracks[record_id] = track
            self._evict()
        return track

    def _evict(self) -> None:
        # Caller holds the lock. Drop exited threads (oldest first) before live ones.
        excess = len(self._tracks) - self._max_threads
        if excess <= 0:
            return
        for rid in [r for r, t in self._tracks.items() if t.exited_mono is not None][:excess]:
            del self._tracks[rid]
            excess -= 1
        while excess > 0:
            self._tracks.popitem(last=False)
            excess -= 1

    def _on_event(self, event: LifecycleEvent) -> None:
        if event.record_id is None or event.kind is None:
            return
        state = _state_after(event)
        if state is None:
            return
        with self._lock:
            track = self._track(event.record_id, event.thread_name or "?", event.kind)
            if self._origin is None or event.mono < self._origin:
                self._origin = event.mono
            if track.exited_mono is not None and state.alive:
                return  # a late stop/join event after the exit does not revive the thread
            if not track.changes or track.changes[-1][1] is not state:
                track.changes.append((event.mono, state))
            if not state.alive:
                track.exited_mono = event.mono

    def strips(self, now: float | None = None, *, limit: int = 500) -> tuple[float, list[Strip]]:
        """The window start and one strip per thread seen in the window (at most ``limit``)."""
        now = self.registry.now() if now is None else now
        start = now - self.window_sec
        with self._lock:
            if self._origin is not None and self._origin > start:
                # A young app: the axis spans its age, with a little room before the start.
                age = max(now - self._origin, 1.0)
                start = max(start, self._origin - 0.05 * age)
            # Forget threads that exited before the window: they have nothing left to show.
            gone = [r for r, t in self._tracks.items() if _exited_before(t, start)]
            for rid in gone:
                del self._tracks[rid]
            tracks = [(t.record_id, t.name, t.kind, list(t.changes)) for t in self._tracks.values()]
        out = []
        for rid, name, kind, changes in tracks[-limit:] if limit > 0 else []:
            segments = []
            for i, (t, state) in enumerate(changes):
                end = changes[i + 1][0] if i + 1 < len(changes) else now
                if not state.alive:
                    end = t  # an exit is a point, drawn as the strip's end
                lo, hi = max(t, start), min(end, now)
                if hi > lo or (not state.alive and start <= t <= now):
                    segments.append(Segment(lo, max(hi, lo), state))
            out.append(Strip(rid, name, kind, tuple(segments)))
        return start, out


def _exited_before(track: Track, start: float) -> bool:
    return track.exited_mono is not None and track.exited_mono < start


def _state_after(event: LifecycleEvent) -> ThreadState | None:
    match event.type:
        case EventType.SPAWN:
            return ThreadState.CREATED
        case EventType.START:
            return ThreadState.RUNNING
        case EventType.STOP_EVENT_SET:
            return ThreadState.STOPPING
        case EventType.EXIT:
            try:
                return ThreadState(str(event.attrs.get("outcome")))
            except ValueError:
                return ThreadState.EXITED_OK
        case EventType.JOIN if event.attrs.get("outcome") == JoinOutcome.TIMEOUT.value:
            return ThreadState.LEAKED
        case _:
            return None
