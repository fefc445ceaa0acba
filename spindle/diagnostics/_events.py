"""Lifecycle events: the facts the registry records and every consumer (spans, timeline) reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._kinds import EventType, ThreadGroup, ThreadKind


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One thing that happened to a thread, a stop event, a database or the shutdown."""

    seq: int
    type: EventType
    wall_time: float
    mono: float
    record_id: int | None = None
    thread_name: str | None = None
    thread_ident: int | None = None
    kind: ThreadKind | None = None
    group: ThreadGroup | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "seq": self.seq,
            "type": self.type.value,
            "wall_time": self.wall_time,
            "mono": self.mono,
            "record_id": self.record_id,
            "thread_name": self.thread_name,
            "thread_ident": self.thread_ident,
            "kind": self.kind.value if self.kind else None,
            "group": self.group.value if self.group else None,
            "attrs": dict(self.attrs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LifecycleEvent:
        """Inverse of :meth:`to_dict`."""
        return cls(
            seq=int(data["seq"]),
            type=EventType(data["type"]),
            wall_time=float(data["wall_time"]),
            mono=float(data["mono"]),
            record_id=data.get("record_id"),
            thread_name=data.get("thread_name"),
            thread_ident=data.get("thread_ident"),
            kind=ThreadKind(data["kind"]) if data.get("kind") else None,
            group=ThreadGroup(data["group"]) if data.get("group") else None,
            attrs=dict(data.get("attrs") or {}),
        )
