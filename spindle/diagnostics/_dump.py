"""In-process stack dumps of every thread, mapped to registry records."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ._kinds import ThreadKind
from ._registry import ThreadRegistry
from ._stacks import current_frames, frames_of
from ._waiting import waiting_on


@dataclass(frozen=True, slots=True)
class ThreadStack:
    """One thread's stack at dump time, with the registry record it belongs to."""

    record_id: int | None
    ident: int
    native_id: int | None
    name: str
    kind: ThreadKind
    waiting_on: str
    frames: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "record_id": self.record_id,
            "ident": self.ident,
            "native_id": self.native_id,
            "name": self.name,
            "kind": self.kind.value,
            "waiting_on": self.waiting_on,
            "frames": self.frames,
        }


def dump_stacks(registry: ThreadRegistry, *, with_locals: bool = False) -> list[ThreadStack]:
    """The stack of every live thread, from ``current_frames()``, innermost frame last.

    Registered threads carry their record id and kind; unregistered ones are ``foreign`` with
    the registry's foreign id. Locals are captured only with ``with_locals=True``: they may
    hold secrets, and a repr can be slow.
    """
    frames = current_frames()
    by_thread = {t.ident: t for t in threading.enumerate() if t.ident is not None}
    foreign = {t.ident: fid for fid, t in registry.foreign_threads()}
    # A started thread whose body has not yet run mark_started has no ident in the registry:
    # find its record through the Thread object.
    by_object = {id(r.thread): r for r in registry.live_records() if r.thread is not None}
    out: list[ThreadStack] = []
    for ident, frame in frames.items():
        # The dumping thread's own frames say "dump_stacks": true, and still useful.
        stack = frames_of(frame, with_locals=with_locals)
        thread = by_thread.get(ident)
        record = registry.record_for_ident(ident)
        if record is None and thread is not None:
            record = by_object.get(id(thread))
        if record is not None:
            record_id: int | None = record.record_id
            name = record.name
            kind = record.kind
            native_id = record.native_id or (thread.native_id if thread is not None else None)
        else:
            record_id = foreign.get(ident)
            name = thread.name if thread is not None else f"<unknown {ident}>"
            kind = ThreadKind.FOREIGN
            native_id = thread.native_id if thread is not None else None
        out.append(ThreadStack(record_id, ident, native_id, name, kind, waiting_on(stack), stack))
    out.sort(key=lambda s: (s.kind is ThreadKind.FOREIGN, s.record_id or 0, s.ident))
    return out
