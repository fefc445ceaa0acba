"""The shutdown timeline: phases and what happened to every thread and database during them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._events import LifecycleEvent
from ._registry import ThreadInfo

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
            "phases": [p.to_dict() for p in self.phases],
            "events": [e.to_dict() for e in self.events],
            "threads": {str(k): v.to_dict() for k, v in self.threads.items()},
            "violations": [v.to_dict() for v in self.violations],
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
            exit_after_destroy_sec=d.get("exit_after_destroy_sec"),
        )

    @property
    def ok(self) -> bool:
        """True when no ordering rule was broken."""
        return not self.violations


def load_report(path: str | Path) -> ShutdownTimeline:
    """Read a shutdown report JSON file (``shutdown_report_path``) back into a timeline."""
    return ShutdownTimeline.from_dict(json.loads(Path(path).read_text()))
