"""Immutable views of the registry: one thread, one stop event, a whole snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._events import LifecycleEvent
from ._kinds import JoinOutcome, ThreadGroup, ThreadKind, ThreadState


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A consistent, immutable view of one thread at snapshot time."""

    record_id: int
    name: str
    kind: ThreadKind
    group: ThreadGroup | None
    parent_id: int | None
    state: ThreadState
    ident: int | None
    native_id: int | None
    daemon: bool | None
    stop_event_set: bool | None
    created_wall: float
    created_mono: float
    started_mono: float | None
    stopped_mono: float | None
    joined_mono: float | None
    join_outcome: JoinOutcome | None
    join_duration: float | None
    exception: str | None
    status_note: str | None
    captured_stack: list[dict[str, Any]] | None
    events: tuple[LifecycleEvent, ...]
    #: What the thread was blocked on when the snapshot was taken (see ``waiting_on()``);
    #: None when not computed or the thread was not running.
    waiting_on: str | None = None
    #: The workflow an executor thread is running (None when it runs none).
    workflow_id: str | None = None
    workflow_name: str | None = None
    #: The step of that workflow it is inside (function id and name), if any.
    step_id: int | None = None
    step_name: str | None = None

    def work_text(self) -> str:
        """``workflow NAME ID, step NAME`` for logs and messages; "" when it runs none."""
        if self.workflow_id is None:
            return ""
        text = f"workflow {self.workflow_name} {self.workflow_id}"
        if self.step_name is not None:
            text += f", step {self.step_name} (#{self.step_id})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "record_id": self.record_id,
            "name": self.name,
            "kind": self.kind.value,
            "group": self.group.value if self.group else None,
            "parent_id": self.parent_id,
            "state": self.state.value,
            "ident": self.ident,
            "native_id": self.native_id,
            "daemon": self.daemon,
            "stop_event_set": self.stop_event_set,
            "created_wall": self.created_wall,
            "created_mono": self.created_mono,
            "started_mono": self.started_mono,
            "stopped_mono": self.stopped_mono,
            "joined_mono": self.joined_mono,
            "join_outcome": self.join_outcome.value if self.join_outcome else None,
            "join_duration": self.join_duration,
            "exception": self.exception,
            "status_note": self.status_note,
            "captured_stack": self.captured_stack,
            "events": [e.to_dict() for e in self.events],
            "waiting_on": self.waiting_on,
            "workflow_id": self.workflow_id,
            "workflow_name": self.workflow_name,
            "step_id": self.step_id,
            "step_name": self.step_name,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThreadInfo:
        """Inverse of :meth:`to_dict`."""
        return cls(
            record_id=int(d["record_id"]),
            name=str(d["name"]),
            kind=ThreadKind(d["kind"]),
            group=ThreadGroup(d["group"]) if d.get("group") else None,
            parent_id=d.get("parent_id"),
            state=ThreadState(d["state"]),
            ident=d.get("ident"),
            native_id=d.get("native_id"),
            daemon=d.get("daemon"),
            stop_event_set=d.get("stop_event_set"),
            created_wall=float(d["created_wall"]),
            created_mono=float(d["created_mono"]),
            started_mono=d.get("started_mono"),
            stopped_mono=d.get("stopped_mono"),
            joined_mono=d.get("joined_mono"),
            join_outcome=JoinOutcome(d["join_outcome"]) if d.get("join_outcome") else None,
            join_duration=d.get("join_duration"),
            exception=d.get("exception"),
            status_note=d.get("status_note"),
            captured_stack=d.get("captured_stack"),
            events=tuple(LifecycleEvent.from_dict(e) for e in d.get("events") or ()),
            waiting_on=d.get("waiting_on"),
            workflow_id=d.get("workflow_id"),
            workflow_name=d.get("workflow_name"),
            step_id=d.get("step_id"),
            step_name=d.get("step_name"),
        )


@dataclass(frozen=True, slots=True)
class StopEventInfo:
    """An immutable view of one registered stop event."""

    stop_id: int
    name: str
    group: ThreadGroup
    is_set: bool
    set_mono: float | None
    thread_record_id: int | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "stop_id": self.stop_id,
            "name": self.name,
            "group": self.group.value,
            "is_set": self.is_set,
            "set_mono": self.set_mono,
            "thread_record_id": self.thread_record_id,
        }


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """Everything the registry knows at one instant, as plain immutable data."""

    taken_wall: float
    taken_mono: float
    threads: tuple[ThreadInfo, ...]
    stop_events: tuple[StopEventInfo, ...]

    def by_id(self, record_id: int) -> ThreadInfo | None:
        """The thread with this registry id, if the snapshot holds it."""
        for info in self.threads:
            if info.record_id == record_id:
                return info
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "taken_wall": self.taken_wall,
            "taken_mono": self.taken_mono,
            "threads": [t.to_dict() for t in self.threads],
            "stop_events": [s.to_dict() for s in self.stop_events],
        }
