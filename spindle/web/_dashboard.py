"""The dashboard's state and its read model: what every page and JSON route is built from."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from spindle.diagnostics import (
    PySpyError,
    RegistrySnapshot,
    ShutdownTimeline,
    ThreadInfo,
    capture_stack,
    format_stack,
    lint,
    pyspy_dump,
    waiting_on,
)

from ._history import ThreadHistory
from ._source import DashboardSource
from ._threads import Filters, ThreadTable, build_table

_ID = re.compile(r"[0-9]{1,18}")


def parse_id(text: str) -> int | None:
    """A registry id from a URL segment, or None when it is not one."""
    return int(text) if _ID.fullmatch(text) else None


def clean_frames(frames: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Frames without locals: the dashboard never shows them, whatever was captured."""
    return [{k: v for k, v in f.items() if k != "locals"} for f in frames or []]


@dataclass(slots=True)
class ThreadDetail:
    """One thread's page: the record, its events, its stack and its lints."""

    info: ThreadInfo
    stack: list[dict[str, Any]]
    stack_source: str  # live | captured | none
    waits_on: str | None
    lints: list[dict[str, Any]]
    parent_name: str | None
    children: list[tuple[int, str]]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (no locals)."""
        data = self.info.to_dict()
        data["captured_stack"] = clean_frames(self.info.captured_stack) or None
        data["id"] = self.info.record_id
        data["stack"] = self.stack
        data["stack_source"] = self.stack_source
        data["waits_on"] = self.waits_on
        data["lints"] = self.lints
        data["parent_name"] = self.parent_name
        data["children"] = [{"id": i, "name": n} for i, n in self.children]
        return data


@dataclass(slots=True)
class PySpyResult:
    """A py-spy dump as seen from one thread: its native frames and who holds the GIL."""

    ok: bool
    reason: str | None = None
    thread: dict[str, Any] | None = None
    gil_holders: list[str] = field(default_factory=list)
    threads: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "ok": self.ok,
            "reason": self.reason,
            "thread": self.thread,
            "gil_holders": self.gil_holders,
            "threads": self.threads,
        }


class Dashboard:
    """Holds the source, the state history and the settings; builds every page's data."""

    def __init__(
        self,
        source: DashboardSource,
        *,
        allow_pyspy: bool,
        lint_grace_sec: float = 5.0,
        pyspy_timeout: float = 10.0,
    ) -> None:
        self.source = source
        self.allow_pyspy = allow_pyspy
        self.lint_grace_sec = lint_grace_sec
        self.pyspy_timeout = pyspy_timeout
        self.history = ThreadHistory(source.registry)
        # One py-spy at a time: each dump pauses the whole process, so a second click while
        # one runs is refused instead of queued.
        self._pyspy_lock = threading.Lock()

    @property
    def service_name(self) -> str:
        """The app's name."""
        return self.source.service_name

    def snapshot(self) -> RegistrySnapshot:
        """The registry now, threads the runtime did not make included (kind ``foreign``)."""
        return self.source.registry.snapshot(include_foreign=True)

    def table(self, filters: Filters) -> ThreadTable:
        """The thread table for these filters."""
        return build_table(self.snapshot(), filters, lints=self.lints())

    def lints(self) -> list[dict[str, Any]]:
        """Every current lint, as plain data."""
        return [
            item.to_dict() for item in lint(self.source.registry, grace_sec=self.lint_grace_sec)
        ]

    def thread(self, record_id: int) -> ThreadDetail | None:
        """One thread's detail, or None when the registry does not know the id."""
        snapshot = self.snapshot()
        info = snapshot.by_id(record_id)
        if info is None:
            return None
        stack: list[dict[str, Any]] = []
        source = "none"
        if info.state.alive and info.ident is not None:
            live = capture_stack(info.ident)
            if live is not None:
                stack, source = clean_frames(live), "live"
        if not stack and info.captured_stack:
            stack, source = clean_frames(info.captured_stack), "captured"
        names = {t.record_id: t.name for t in snapshot.threads}
        children = [(t.record_id, t.name) for t in snapshot.threads if t.parent_id == record_id]
        lints = [item for item in self.lints() if record_id in item.get("thread_ids", ())]
        return ThreadDetail(
            info=info,
            stack=stack,
            stack_source=source,
            waits_on=info.waiting_on or (waiting_on(stack) if source == "live" else None),
            lints=lints,
            parent_name=names.get(info.parent_id) if info.parent_id is not None else None,
            children=children,
        )

    def pyspy(self, info: ThreadInfo) -> PySpyResult:
        """Dump the process with py-spy and pick out this thread (blocking: run off-loop)."""
        if not self.allow_pyspy:
            return PySpyResult(False, "py-spy dumps are disabled for this dashboard")
        if not info.state.alive or info.ident is None:
            return PySpyResult(False, f"thread {info.name!r} is not running ({info.state.value})")
        if not self._pyspy_lock.acquire(blocking=False):
            return PySpyResult(False, "another py-spy dump is running; try again when it ends")
        try:
            dumped = pyspy_dump(
                None, native=True, timeout=self.pyspy_timeout, registry=self.source.registry
            )
        except PySpyError as exc:
            return PySpyResult(False, str(exc) or "py-spy failed")
        finally:
            self._pyspy_lock.release()
        threads = [t.to_dict() for t in dumped]
        holders = [str(t["name"] or t["os_thread_id"]) for t in threads if t["owns_gil"]]
        mine = next(
            (
                t
                for t in threads
                if t["thread_id"] == info.ident
                or (info.native_id is not None and t["os_thread_id"] == info.native_id)
            ),
            None,
        )
        if mine is None:
            return PySpyResult(
                False,
                f"py-spy saw {len(threads)} threads but not {info.name!r}; it may have just exited",
                None,
                holders,
                threads,
            )
        return PySpyResult(True, None, mine, holders, threads)

    def timelines(self) -> list[ShutdownTimeline]:
        """Kept shutdown timelines, newest first."""
        return list(reversed(self.source.timelines()))


def violation_stacks(timeline: ShutdownTimeline) -> list[dict[str, Any]]:
    """Each violation with its stacks formatted as text, for display."""
    out = []
    for v in timeline.violations:
        stacks = []
        for tid, frames in v.stacks.items():
            rid = parse_id(str(tid))
            info = timeline.threads.get(rid) if rid is not None else None
            stacks.append(
                {
                    "thread": info.name if info else f"#{tid}",
                    "text": format_stack(clean_frames(frames)),
                }
            )
        out.append({"violation": v, "stacks": stacks})
    return out
