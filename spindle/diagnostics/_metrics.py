"""Thread metrics: families read from the registry at scrape time, plus a few event counters.

Renderer-neutral: a :class:`Family` is a name, a type, a help text and samples; the runtime
turns families into Prometheus text or OpenTelemetry instruments. Gauges (threads by kind and
state) are read from a registry snapshot when asked, so they cost nothing between scrapes.
What a snapshot cannot tell after the fact (how many threads were ever spawned, how long each
join took, the phases of a shutdown, its violations) is counted by one registry listener on
lifecycle events, which are per thread, never per workflow.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from ._events import LifecycleEvent
from ._kinds import EventType, ThreadKind, ThreadState
from ._registry import ThreadRegistry
from ._rules import RULES
from ._session import add_timeline_listener
from ._timeline import ShutdownTimeline

#: Upper bounds (seconds) of the join-duration histogram: a clean join takes microseconds to
#: milliseconds; the default join timeout is 10 s, so the buckets reach past it.
JOIN_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: Kinds counted in ``spindle_threads``: every kind the runtime creates (foreign threads have
#: a family of their own, so the runtime's count agrees with the registry).
RUNTIME_KINDS: tuple[ThreadKind, ...] = tuple(k for k in ThreadKind if k is not ThreadKind.FOREIGN)
#: States of a live thread: exited records are history, not threads.
LIVE_STATES: tuple[ThreadState, ...] = tuple(s for s in ThreadState if s.alive)

GAUGE = "gauge"
COUNTER = "counter"
HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a family, with its label values (in the family's label order)."""

    labels: tuple[str, ...]
    value: float


@dataclass(frozen=True, slots=True)
class HistogramSample:
    """One histogram series: cumulative counts per upper bound, the sum and the count."""

    labels: tuple[str, ...]
    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family: always exposed, with or without samples."""

    name: str
    type: str
    help: str
    label_names: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()
    histograms: tuple[HistogramSample, ...] = ()


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(JOIN_BUCKETS))
    sum: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(JOIN_BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1


_WANTED = frozenset(
    {
        EventType.SPAWN,
        EventType.JOIN,
        EventType.SHUTDOWN_BEGIN,
        EventType.SHUTDOWN_END,
        EventType.PHASE_START,
        EventType.PHASE_END,
    }
)


class ThreadMetrics:
    """The thread families of one registry; get it with :func:`thread_metrics`."""

    def __init__(self, registry: ThreadRegistry) -> None:
        # Weak: the registry holds this object (its listener) and outlives nothing else.
        self._registry = weakref.ref(registry)
        self._lock = threading.Lock()
        self._spawns: dict[str, int] = {k.value: 0 for k in RUNTIME_KINDS}
        self._joins: dict[tuple[str, str], _Histogram] = {}
        self._phase_start: dict[str, float] = {}
        self._phase_seconds: dict[str, float] = {}
        self._shutdowns: set[str] = set()
        self._in_shutdown = False
        self._violations: dict[str, int] = dict.fromkeys(RULES, 0)
        self._counted_timelines: set[str] = set()
        # Listener first, then the seed: a thread spawned in between is seen by both, so
        # the seed skips ids the listener already counted.
        self._seen_ids: set[int] | None = set()
        registry.add_listener(self._on_event)
        for record in registry.records():
            with self._lock:
                assert self._seen_ids is not None
                if record.record_id not in self._seen_ids and record.kind is not ThreadKind.FOREIGN:
                    self._spawns[record.kind.value] = self._spawns.get(record.kind.value, 0) + 1
        with self._lock:
            self._seen_ids = None
        # Violations come with the finished timeline, after the last event of the shutdown.
        ref = weakref.ref(self)

        def on_timeline(timeline: ShutdownTimeline) -> None:
            me = ref()
            if me is None:
                remove_timeline()  # this registry is gone: stop listening
                return
            me._on_timeline(timeline)

        remove_timeline = add_timeline_listener(on_timeline)

    def _on_event(self, event: LifecycleEvent) -> None:
        # Called for every lifecycle event: return at once for the types not counted here.
        if event.type not in _WANTED:
            return
        with self._lock:
            if event.type is EventType.SPAWN:
                if event.kind is not None and event.kind is not ThreadKind.FOREIGN:
                    self._spawns[event.kind.value] = self._spawns.get(event.kind.value, 0) + 1
                if self._seen_ids is not None and event.record_id is not None:
                    self._seen_ids.add(event.record_id)
            elif event.type is EventType.JOIN:
                duration = event.attrs.get("duration")
                if event.kind is not None and isinstance(duration, int | float):
                    key = (event.kind.value, str(event.attrs.get("outcome", "")))
                    self._joins.setdefault(key, _Histogram()).observe(float(duration))
            elif event.type is EventType.SHUTDOWN_BEGIN:
                # The phase gauges show the latest shutdown, the one now beginning.
                self._phase_start.clear()
                self._phase_seconds.clear()
                self._in_shutdown = True
                self._shutdowns.add(str(event.attrs.get("shutdown_id")))
            elif event.type is EventType.SHUTDOWN_END:
                self._in_shutdown = False
            elif event.type is EventType.PHASE_START:
                self._phase_start[str(event.attrs.get("phase"))] = event.mono
            else:  # PHASE_END
                phase = str(event.attrs.get("phase"))
                start = self._phase_start.get(phase)
                if start is not None:
                    self._phase_seconds[phase] = max(0.0, event.mono - start)

    def _on_timeline(self, timeline: ShutdownTimeline) -> None:
        with self._lock:
            # Every app's timelines reach every listener: count only this registry's.
            if timeline.shutdown_id not in self._shutdowns:
                return
            if timeline.shutdown_id in self._counted_timelines:
                return
            self._counted_timelines.add(timeline.shutdown_id)
            for v in timeline.violations:
                self._violations[v.rule] = self._violations.get(v.rule, 0) + 1

    def families(self) -> list[Family]:
        """Every thread family, read now."""
        live: dict[tuple[str, str], int] = {
            (k.value, s.value): 0 for k in RUNTIME_KINDS for s in LIVE_STATES
        }
        foreign: dict[str, int] = {}
        # One snapshot, with waits: a blocked running thread counts as waiting, exactly as
        # /dbos/threads.json counts it.
        registry = self._registry()
        snapshot = registry.snapshot(include_foreign=True, with_waiting=True) if registry else None
        for info in snapshot.threads if snapshot is not None else ():
            if not info.state.alive:
                continue
            if info.kind is ThreadKind.FOREIGN:
                foreign[info.state.value] = foreign.get(info.state.value, 0) + 1
            else:
                key = (info.kind.value, info.state.value)
                live[key] = live.get(key, 0) + 1
        with self._lock:
            spawns = dict(self._spawns)
            joins = {k: (list(h.counts), h.sum, h.count) for k, h in self._joins.items()}
            phases = dict(self._phase_seconds)
            violations = dict(self._violations)
            in_shutdown = self._in_shutdown
        return [
            Family(
                "spindle_threads",
                GAUGE,
                "Live runtime threads in the registry, by kind and state "
                "(as /dbos/threads.json counts them).",
                ("kind", "state"),
                tuple(Sample(k, float(n)) for k, n in live.items()),
            ),
            Family(
                "spindle_foreign_threads",
                GAUGE,
                "Live threads the runtime did not create (threading.enumerate()), by state.",
                ("state",),
                tuple(Sample((s,), float(n)) for s, n in sorted(foreign.items())),
            ),
            Family(
                "spindle_thread_spawns_total",
                COUNTER,
                "Runtime threads spawned (registered) since this app was created, by kind.",
                ("kind",),
                tuple(Sample((k,), float(n)) for k, n in spawns.items()),
            ),
            Family(
                "spindle_thread_join_seconds",
                HISTOGRAM,
                "How long each thread join took, by kind and outcome (joined or timeout).",
                ("kind", "outcome"),
                histograms=tuple(
                    HistogramSample(
                        key, tuple(zip(JOIN_BUCKETS, counts, strict=True)), total, count
                    )
                    for key, (counts, total, count) in sorted(joins.items())
                ),
            ),
            Family(
                "spindle_shutdown_phase_seconds",
                GAUGE,
                "Duration of each phase of the latest (or the running) shutdown.",
                ("phase",),
                tuple(Sample((p,), s) for p, s in phases.items()),
            ),
            Family(
                "spindle_shutdown_in_progress",
                GAUGE,
                "1 while destroy() is running its phases, else 0.",
                (),
                (Sample((), 1.0 if in_shutdown else 0.0),),
            ),
            Family(
                "spindle_shutdown_violations_total",
                COUNTER,
                "Shutdown ordering-rule violations recorded in this process, by rule.",
                ("rule",),
                tuple(Sample((r,), float(n)) for r, n in violations.items()),
            ),
        ]


_installed: weakref.WeakKeyDictionary[ThreadRegistry, ThreadMetrics] = weakref.WeakKeyDictionary()
_installed_lock = threading.Lock()


def thread_metrics(registry: ThreadRegistry) -> ThreadMetrics:
    """The registry's :class:`ThreadMetrics`, installed on first use and kept with it."""
    with _installed_lock:
        metrics = _installed.get(registry)
        if metrics is None:
            metrics = ThreadMetrics(registry)
            _installed[registry] = metrics
        return metrics
