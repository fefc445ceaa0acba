"""The thread table as data: filters, counts, grouping by kind and the parent/child tree.

HTML and JSON are two renderings of the same :class:`ThreadTable`, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

from spindle.diagnostics import RegistrySnapshot, ThreadInfo, ThreadKind, ThreadState

KINDS: tuple[ThreadKind, ...] = tuple(ThreadKind)
STATES: tuple[ThreadState, ...] = tuple(ThreadState)

E = TypeVar("E", ThreadKind, ThreadState)


class BadQuery(ValueError):
    """A query parameter had a value the dashboard does not know (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Which kinds and states to show; empty means all."""

    kinds: tuple[ThreadKind, ...] = ()
    states: tuple[ThreadState, ...] = ()

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Filters:
        """Read ``kind`` and ``state`` (repeatable or comma-separated) from query params."""
        kinds = tuple(_parse_enum(ThreadKind, "kind", _values(params, "kind")))
        states = tuple(_parse_enum(ThreadState, "state", _values(params, "state")))
        return cls(kinds, states)

    def accepts(self, info: ThreadInfo) -> bool:
        """True when the thread passes both filters."""
        return (not self.kinds or info.kind in self.kinds) and (
            not self.states or info.state in self.states
        )

    def query(self) -> str:
        """The filters as a query string (no leading ``?``), for links that keep them."""
        pairs = [("kind", k.value) for k in self.kinds] + [("state", s.value) for s in self.states]
        return urlencode(pairs)

    def to_dict(self) -> dict[str, list[str]]:
        """Plain JSON-ready data."""
        return {"kind": [k.value for k in self.kinds], "state": [s.value for s in self.states]}


def _values(params: Mapping[str, Any], key: str) -> list[str]:
    getlist = getattr(params, "getlist", None)
    raw: list[str] = list(getlist(key)) if getlist else [params[key]] if key in params else []
    return [part.strip() for value in raw for part in value.split(",") if part.strip()]


def _parse_enum(enum: type[E], key: str, values: Iterable[str]) -> list[E]:
    out: list[E] = []
    for value in values:
        try:
            member = enum(value)
        except ValueError:
            valid = ", ".join(m.value for m in enum)
            raise BadQuery(f"unknown {key} {value!r}; expected one of: {valid}") from None
        if member not in out:
            out.append(member)
    return out


@dataclass(slots=True)
class Row:
    """One line of the thread table."""

    info: ThreadInfo
    depth: int
    age: float
    waits_on: str | None
    parent_name: str | None
    lints: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stop_text(self) -> str:
        """The stop event's state in words."""
        if self.info.stop_event_set is None:
            return "none"
        return "set" if self.info.stop_event_set else "not set"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: the record without its events and stack, plus the view."""
        info = self.info
        return {
            "id": info.record_id,
            "name": info.name,
            "kind": info.kind.value,
            "state": info.state.value,
            "alive": info.state.alive,
            "group": info.group.value if info.group else None,
            "parent_id": info.parent_id,
            "parent_name": self.parent_name,
            "depth": self.depth,
            "ident": info.ident,
            "native_id": info.native_id,
            "daemon": info.daemon,
            "stop_event_set": info.stop_event_set,
            "age_sec": round(self.age, 3),
            "waits_on": self.waits_on,
            "status_note": info.status_note,
            "exception": info.exception,
            "join_outcome": info.join_outcome.value if info.join_outcome else None,
            "lints": self.lints,
        }


@dataclass(slots=True)
class ThreadTable:
    """Counts of every thread by kind and state, and the filtered rows grouped by kind."""

    snapshot: RegistrySnapshot
    filters: Filters
    counts: dict[ThreadKind, dict[ThreadState, int]]
    groups: list[tuple[ThreadKind, list[Row]]]
    general_lints: list[dict[str, Any]]

    @property
    def total(self) -> int:
        """Threads in the snapshot."""
        return len(self.snapshot.threads)

    @property
    def shown(self) -> int:
        """Rows that passed the filters."""
        return sum(len(rows) for _, rows in self.groups)

    def state_totals(self) -> dict[ThreadState, int]:
        """Threads per state, over all kinds."""
        out = dict.fromkeys(STATES, 0)
        for per_state in self.counts.values():
            for state, n in per_state.items():
                out[state] += n
        return out

    def to_dict(self, service: str) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "service": service,
            "taken_wall": self.snapshot.taken_wall,
            "filters": self.filters.to_dict(),
            "total": self.total,
            "shown": self.shown,
            "counts": {
                k.value: {s.value: n for s, n in per.items() if n} for k, per in self.counts.items()
            },
            "lints": self.general_lints,
            "threads": [row.to_dict() for _, rows in self.groups for row in rows],
        }


def build_table(
    snapshot: RegistrySnapshot,
    filters: Filters,
    *,
    lints: list[dict[str, Any]],
) -> ThreadTable:
    """Group the snapshot's threads by kind, children indented under their parents.

    ``waits_on`` comes from the snapshot (diagnostics reads each live thread's top frames);
    lints naming threads go on their rows, the others on top of the page.
    """
    counts: dict[ThreadKind, dict[ThreadState, int]] = {k: dict.fromkeys(STATES, 0) for k in KINDS}
    names: dict[int, str] = {}
    for info in snapshot.threads:
        counts[info.kind][info.state] += 1
        names[info.record_id] = info.name

    by_thread: dict[int, list[dict[str, Any]]] = {}
    general: list[dict[str, Any]] = []
    for item in lints:
        ids = item.get("thread_ids") or ()
        if not ids:
            general.append(item)
        for tid in ids:
            by_thread.setdefault(tid, []).append(item)

    per_kind: dict[ThreadKind, list[ThreadInfo]] = {}
    for info in snapshot.threads:
        if filters.accepts(info):
            per_kind.setdefault(info.kind, []).append(info)

    now = snapshot.taken_mono
    groups: list[tuple[ThreadKind, list[Row]]] = []
    for kind in KINDS:
        infos = per_kind.get(kind)
        if not infos:
            continue
        rows: list[Row] = []
        for info, depth in _tree_order(infos):
            end = info.stopped_mono if info.stopped_mono is not None else now
            rows.append(
                Row(
                    info=info,
                    depth=depth,
                    age=max(0.0, end - info.created_mono),
                    waits_on=info.waiting_on,
                    parent_name=names.get(info.parent_id) if info.parent_id else None,
                    lints=by_thread.get(info.record_id, []),
                )
            )
        groups.append((kind, rows))
    return ThreadTable(snapshot, filters, counts, groups, general)


def _tree_order(infos: list[ThreadInfo]) -> list[tuple[ThreadInfo, int]]:
    # Children follow their parent, indented, when the parent is in the same group; a child
    # whose parent is filtered out or of another kind is a root here (its parent column
    # still names the parent). Iterative so a deep chain cannot hit the recursion limit.
    ids = {i.record_id for i in infos}
    children: dict[int, list[ThreadInfo]] = {}
    roots: list[ThreadInfo] = []
    for info in sorted(infos, key=lambda i: i.record_id):
        if (
            info.parent_id is not None
            and info.parent_id in ids
            and info.parent_id != info.record_id
        ):
            children.setdefault(info.parent_id, []).append(info)
        else:
            roots.append(info)
    out: list[tuple[ThreadInfo, int]] = []
    seen: set[int] = set()
    stack: list[tuple[ThreadInfo, int]] = [(r, 0) for r in reversed(roots)]
    while stack:
        info, depth = stack.pop()
        if info.record_id in seen:
            continue
        seen.add(info.record_id)
        out.append((info, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(info.record_id, [])))
    # A parent cycle (impossible from the supervisor, but data is data) leaves rows unvisited.
    out.extend((i, 0) for i in infos if i.record_id not in seen)
    return out


def format_age(seconds: float) -> str:
    """A short human duration: ``0.4s``, ``12s``, ``3m05s``, ``2h07m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
