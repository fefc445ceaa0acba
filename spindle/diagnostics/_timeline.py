"""The shutdown timeline: phases and what happened to every thread and database during them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._events import LifecycleEvent
from ._info import ThreadInfo

SCHEMA_VERSION = 1


@dataclass(slots=True)
class PhaseRecord:
    """One phase as it ran."""

    index: int
    name: str
    start_wall: float
    start_mono: float
    end_mono: float | None = None
    #: ``running`` until it ends; then ``ok``, ``timeout`` (a join in it timed out) or
    #: ``error`` (it raised).
    outcome: str = "running"
    error: str | None = None
    #: The thread(s) the phase waited on: every join that timed out, else its longest join.
    #: Each ``{record_id, name, kind, outcome, duration, workflow_id, workflow_name,
    #: step_name}``.
    threads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        """Seconds it took; None while it runs."""
        return None if self.end_mono is None else self.end_mono - self.start_mono

    def copy(self) -> PhaseRecord:
        """An independent copy (the live view hands these out while the phase runs)."""
        return replace(self, threads=[dict(t) for t in self.threads])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "index": self.index,
            "name": self.name,
            "start_wall": self.start_wall,
            "start_mono": self.start_mono,
            "end_mono": self.end_mono,
            "duration": self.duration,
            "outcome": self.outcome,
            "error": self.error,
            "threads": [dict(t) for t in self.threads],
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
            threads=[dict(t) for t in d.get("threads") or ()],
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
    #: Only on a live view of a shutdown still running: what it waits on now (see
    #: ``ShutdownRecorder.live``); None in a finished timeline.
    progress: dict[str, Any] | None = None
    #: When each violation stack was captured: record id (string) -> epoch seconds.
    stacks_captured_wall: dict[str, float] = field(default_factory=dict)

    @property
    def current_phase(self) -> str | None:
        """The phase running now (None once the shutdown finished or between phases)."""
        if self.ended_mono is not None:
            return None
        running = [p for p in self.phases if p.end_mono is None]
        return running[-1].name if running else None

    #: Seconds from destroy() returning to the process exiting (set at exit, by atexit).
    exit_after_destroy_sec: float | None = None

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
            "in_progress": self.ended_mono is None,
            "current_phase": self.current_phase,
            "progress": self.progress,
            "phases": [p.to_dict() for p in self.phases],
            "events": [e.to_dict() for e in self.events],
            "threads": {str(k): v.to_dict() for k, v in self.threads.items()},
            "violations": [v.to_dict() for v in self.violations],
            "stacks_captured_wall": dict(self.stacks_captured_wall),
            "exit_after_destroy_sec": self.exit_after_destroy_sec,
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
            progress=d.get("progress"),
            stacks_captured_wall={
                str(k): float(v) for k, v in (d.get("stacks_captured_wall") or {}).items()
            },
            exit_after_destroy_sec=d.get("exit_after_destroy_sec"),
        )

    @property
    def ok(self) -> bool:
        """True when no ordering rule was broken."""
        return not self.violations


def load_report(path: str | Path) -> ShutdownTimeline:
    """Read a shutdown report JSON file (``shutdown_report_path``) back into a timeline."""
    return ShutdownTimeline.from_dict(json.loads(Path(path).read_text()))
