"""The shutdown timeline: phases and what happened to every thread and database during them."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._events import LifecycleEvent
from ._kinds import EventType, ThreadKind
from ._phases import SHUTDOWN_PHASES
from ._registry import ThreadInfo, ThreadRegistry
from ._stacks import capture_stack, frames_of

SCHEMA_VERSION = 1


@dataclass(slots=True)
class PhaseRecord:
    """One phase as it ran."""

    index: int
    name: str
    start_wall: float
    start_mono: float
    end_mono: float | None = None
    outcome: str = "running"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "index": self.index,
            "name": self.name,
            "start_wall": self.start_wall,
            "start_mono": self.start_mono,
            "end_mono": self.end_mono,
            "outcome": self.outcome,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhaseRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(
            index=int(d["index"]),
            name=str(d["name"]),
            start_wall=float(d["start_wall"]),
            start_mono=float(d["start_mono"]),
            end_mono=d.get("end_mono"),
            outcome=str(d.get("outcome", "ok")),
            error=d.get("error"),
        )


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken ordering rule: which rule, in which phase, which threads, and why it matters."""

    rule: str
    phase: str | None
    message: str
    thread_ids: tuple[int, ...] = ()
    thread_names: tuple[str, ...] = ()
    stacks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "rule": self.rule,
            "phase": self.phase,
            "message": self.message,
            "thread_ids": list(self.thread_ids),
            "thread_names": list(self.thread_names),
            "stacks": self.stacks,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Violation:
        """Inverse of :meth:`to_dict`."""
        return cls(
            rule=d["rule"],
            phase=d.get("phase"),
            message=d["message"],
            thread_ids=tuple(d.get("thread_ids") or ()),
            thread_names=tuple(d.get("thread_names") or ()),
            stacks=dict(d.get("stacks") or {}),
        )


@dataclass(slots=True)
class ShutdownTimeline:
    """Everything one ``destroy()`` did, in order, with the rules' verdict."""

    shutdown_id: str
    service: str
    planned_phases: tuple[str, ...]
    started_wall: float
    started_mono: float
    ended_mono: float | None = None
    phases: list[PhaseRecord] = field(default_factory=list)
    events: list[LifecycleEvent] = field(default_factory=list)
    threads: dict[int, ThreadInfo] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON form (schema documented in ``docs/shutdown-report.md``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "shutdown_id": self.shutdown_id,
            "service": self.service,
            "planned_phases": list(self.planned_phases),
            "started_wall": self.started_wall,
            "started_mono": self.started_mono,
            "ended_mono": self.ended_mono,
            "phases": [p.to_dict() for p in self.phases],
            "events": [e.to_dict() for e in self.events],
            "threads": {str(k): v.to_dict() for k, v in self.threads.items()},
            "violations": [v.to_dict() for v in self.violations],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShutdownTimeline:
        """Inverse of :meth:`to_dict`: a report read back, without the app that wrote it."""
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"shutdown report schema_version {version!r} is not {SCHEMA_VERSION}")
        return cls(
            shutdown_id=str(d["shutdown_id"]),
            service=str(d.get("service", "")),
            planned_phases=tuple(d.get("planned_phases") or ()),
            started_wall=float(d["started_wall"]),
            started_mono=float(d["started_mono"]),
            ended_mono=d.get("ended_mono"),
            phases=[PhaseRecord.from_dict(p) for p in d.get("phases") or ()],
            events=[LifecycleEvent.from_dict(e) for e in d.get("events") or ()],
            threads={int(k): ThreadInfo.from_dict(v) for k, v in (d.get("threads") or {}).items()},
            violations=[Violation.from_dict(v) for v in d.get("violations") or ()],
        )

    @property
    def ok(self) -> bool:
        """True when no ordering rule was broken."""
        return not self.violations


def load_report(path: str | Path) -> ShutdownTimeline:
    """Read a shutdown report JSON file (``shutdown_report_path``) back into a timeline."""
    return ShutdownTimeline.from_dict(json.loads(Path(path).read_text()))


class ShutdownRecorder:
    """Records one shutdown: call :meth:`begin`, run each phase in :meth:`phase`, then
    :meth:`finish`, which runs the ordering rules over what was recorded."""

    def __init__(
        self,
        registry: ThreadRegistry,
        *,
        service: str = "",
        phases: Sequence[str] = SHUTDOWN_PHASES,
    ) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._remove_listener: Any = None
        self._begun = False
        self._prepare_steps = 0
        # Stacks taken when the evidence happened (a DB closed under a live thread, a spawn
        # during shutdown), not at finish(), when the thread may be gone.
        self._stacks: dict[int, list[dict[str, Any]]] = {}
        self.timeline = ShutdownTimeline(
            shutdown_id=uuid.uuid4().hex,
            service=service,
            planned_phases=tuple(phases),
            started_wall=time.time(),
            started_mono=registry.now(),
        )

    def _on_event(self, event: LifecycleEvent) -> None:
        with self._lock:
            self.timeline.events.append(event)
            if event.record_id is not None and event.type is EventType.SPAWN:
                record = self._registry.get(event.record_id)
                if record is not None:
                    self.timeline.threads[record.record_id] = ThreadRegistry._info(record)
                # Runs in the spawning thread: its stack shows who spawned during shutdown.
                self._stacks.setdefault(event.record_id, frames_of(sys._getframe(1)))
            elif event.type is EventType.DB_CLOSE:
                for record in self._registry.live_records():
                    if record.kind is ThreadKind.FOREIGN or record.ident is None:
                        continue
                    if record.record_id not in self._stacks:
                        frames = capture_stack(record.ident)
                        if frames is not None:
                            self._stacks[record.record_id] = frames
            elif event.type is EventType.STACK_CAPTURED and event.record_id is not None:
                record = self._registry.get(event.record_id)
                if record is not None and record.captured_stack:
                    self._stacks[record.record_id] = list(record.captured_stack)

    def begin(self) -> None:
        """Start recording: every event from now on belongs to this timeline."""
        if self._begun:
            raise RuntimeError("ShutdownRecorder.begin() called twice")
        self._begun = True
        self._remove_listener = self._registry.add_listener(self._on_event)
        for record in self._registry.live_records():
            self.timeline.threads[record.record_id] = ThreadRegistry._info(record)
        self._registry.emit(EventType.SHUTDOWN_BEGIN, None, shutdown_id=self.timeline.shutdown_id)

    @contextlib.contextmanager
    def prepare(self, name: str) -> Iterator[None]:
        """Run one step before phase 1, recorded as ``shutdown.prepare.start``/``.end`` events.

        Not a phase: the report's ``phases`` (and the rule on their order) stay the planned
        ones. An exception is recorded in the end event's ``outcome`` and ``error``, and raised.
        """
        if not self._begun or self.timeline.phases:
            raise RuntimeError("ShutdownRecorder.prepare() runs after begin(), before phase 1")
        self._prepare_steps += 1
        index = self._prepare_steps
        self._registry.emit(EventType.PREPARE_START, None, step=name, index=index)
        outcome, error = "error", None
        try:
            yield
            outcome = "ok"
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._registry.emit(
                EventType.PREPARE_END, None, step=name, index=index, outcome=outcome, error=error
            )

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseRecord]:
        """Run one phase: records start, end and outcome; an exception is recorded, not hidden."""
        index = len(self.timeline.phases) + 1
        rec = PhaseRecord(index, name, time.time(), self._registry.now())
        self.timeline.phases.append(rec)
        self._registry.emit(EventType.PHASE_START, None, phase=name, index=index)
        try:
            yield rec
        except BaseException as exc:
            rec.outcome = "error"
            rec.error = f"{type(exc).__name__}: {exc}"
            raise
        else:
            if rec.outcome == "running":
                rec.outcome = "ok"
        finally:
            rec.end_mono = self._registry.now()
            self._registry.emit(
                EventType.PHASE_END, None, phase=name, index=index, outcome=rec.outcome
            )

    def finish(self) -> ShutdownTimeline:
        """Stop recording, run the rules and return the finished timeline."""
        from ._rules import check_rules

        self._registry.emit(EventType.SHUTDOWN_END, None, shutdown_id=self.timeline.shutdown_id)
        if self._remove_listener is not None:
            self._remove_listener()
        self.timeline.ended_mono = self._registry.now()
        with self._lock:
            stacks = dict(self._stacks)
        for record in self._registry.live_records():
            if record.kind is not ThreadKind.FOREIGN and record.ident is not None:
                frames = capture_stack(record.ident)
                if frames is not None:
                    # A stack from the moment of the evidence beats one taken now.
                    stacks.setdefault(record.record_id, frames)
        # A stop event counts only if its thread was alive when shutdown began (or it has no
        # thread): a thread that finished its work and exited before had nothing to stop.
        unset = [
            e.name
            for e in self._registry.unset_stop_events()
            if e.thread_record_id is None
            or (
                e.thread_record_id in self.timeline.threads
                and self.timeline.threads[e.thread_record_id].state.alive
            )
        ]
        self.timeline.violations = check_rules(self.timeline, stacks=stacks, unset_stops=unset)
        return self.timeline
