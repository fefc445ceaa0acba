"""The dashboard's state and its read model: what every page and JSON route is built from."""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spindle.diagnostics import (
    EventType,
    PySpyError,
    RegistrySnapshot,
    ShutdownTimeline,
    ThreadInfo,
    ThreadState,
    capture_stack,
    lint,
    pyspy_dump,
)

from ._history import ThreadHistory
from ._source import DashboardSource
from ._threads import Filters, ThreadTable, build_table, effective_state
from ._waits import WaitClassifier

_ID = re.compile(r"[0-9]{1,18}")

logger = logging.getLogger("spindle.diagnostics")


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
    state: ThreadState
    stack: list[dict[str, Any]]
    stack_source: str  # live | captured | none
    waits_on: str | None
    lints: list[dict[str, Any]]
    parent_name: str | None
    children: list[tuple[int, str]]
    #: When the stack shown was taken (epoch s): now for a live one, the capture's time
    #: for a kept one; so a live stack and a py-spy dump can be told apart.
    stack_captured_wall: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (no locals)."""
        data = self.info.to_dict()
        data["captured_stack"] = clean_frames(self.info.captured_stack) or None
        data["id"] = self.info.record_id
        data["state"] = self.state.value
        data["stack"] = self.stack
        data["stack_source"] = self.stack_source
        data["stack_captured_wall"] = self.stack_captured_wall
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
    #: When the dump was taken (epoch s): compare with the page's live stack.
    taken_wall: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "taken_wall": self.taken_wall,
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
        self.waits = WaitClassifier()
        # The registry changes only through events, so a snapshot stays valid until the next
        # event, or until a thread the registry does not own (foreign) appears, goes or is
        # renamed. With 5,000 threads a snapshot is half the page's budget; a dashboard
        # polling an idle runtime every 2 s should not pay it each time.
        self._versions = itertools.count(1)
        self._version = 0
        self._remove_listener: Callable[[], None] | None = None
        self._cached: (
            tuple[int, tuple[tuple[int | None, str], ...], RegistrySnapshot, tuple[object, ...]]
            | None
        ) = None
        # One py-spy at a time: each dump pauses the whole process, so a second click while
        # one runs is refused instead of queued.
        self._pyspy_lock = threading.Lock()
        self._listen_lock = threading.Lock()
        self._replayed = False

    @property
    def service_name(self) -> str:
        """The app's name."""
        return self.source.service_name

    @property
    def live(self) -> bool:
        """False for a saved report (no live threads: no live stacks, no sampling)."""
        return bool(getattr(self.source, "live", True))

    def start(self) -> None:
        """Install the registry listeners (state history, snapshot version); idempotent."""
        replay = getattr(self.source, "history_events", None)
        if replay is not None and not self.history.running and not self._replayed:
            # A saved report: its history is its threads as the shutdown began, then its
            # own events, replayed once.
            self._replayed = True
            for timeline in self.source.timelines()[-1:]:
                for info in timeline.threads.values():
                    self.history.observe(
                        info.record_id, info.name, info.kind, info.state, timeline.started_mono
                    )
            self.history.replay(replay())
        self.history.start()
        with self._listen_lock:
            if self._remove_listener is None:
                self._remove_listener = self.source.registry.add_listener(self._bump)

    def stop(self) -> None:
        """Remove the registry listeners; idempotent."""
        self.history.stop()
        with self._listen_lock:
            remove, self._remove_listener = self._remove_listener, None
            self._cached = None
        if remove is not None:
            remove()

    @property
    def running(self) -> bool:
        """True while the listeners are installed."""
        return self._remove_listener is not None and self.history.running

    def _bump(self, event: object) -> None:
        # next() on a count is atomic under the GIL: concurrent events never share a value.
        self._version = next(self._versions)

    def _registry_snapshot(self) -> RegistrySnapshot:
        registry = self.source.registry
        # Read the version before the snapshot: an event racing it bumps the version after,
        # so the next call does not trust this snapshot.
        version = self._version
        threads = tuple((t.ident, t.name) for t in threading.enumerate())
        # Pool threads change workflow and step without an event: part of the key.
        work = registry.work_state()
        cached = self._cached
        if (
            cached is not None
            and self._remove_listener is not None
            and cached[0] == version
            and cached[1] == threads
            and cached[3] == work
        ):
            return cached[2]
        snapshot = registry.snapshot(include_foreign=True, with_waiting=False)
        if self._remove_listener is not None:
            self._cached = (version, threads, snapshot, work)
        return snapshot

    def snapshot(self) -> tuple[RegistrySnapshot, dict[int, str]]:
        """The registry now (foreign threads included) and what each live thread waits on.

        Waits come from the memoised classifier, not ``snapshot(with_waiting=True)``: the
        answers are the same, the cost at 5,000 threads is not.
        """
        snapshot = self._registry_snapshot()
        idents = [t.ident for t in snapshot.threads if t.ident is not None and t.state.alive]
        return snapshot, self.waits.classify(idents)

    def sample_history(self) -> None:
        """Record every live thread's state now (waiting, running, idle; foreign threads
        too): what the lifecycle events cannot tell. Called about once a second while the
        app serves, and before the history is shown. Never raises."""
        if not self.live:
            return  # a saved report: its history is its events
        try:
            snapshot, waits = self.snapshot()
            now = self.source.registry.now()
            live: set[int] = set()
            samples = []
            for info in snapshot.threads:
                if not info.state.alive:
                    continue
                live.add(info.record_id)
                state, _wait = effective_state(info, waits)
                samples.append((info.record_id, info.name, info.kind, state))
            self.history.observe_many(samples, now)
            self.history.forget_missing(live, now)
        except Exception:
            logger.exception("spindle: history sample failed")

    def table(self, filters: Filters) -> ThreadTable:
        """The thread table for these filters."""
        snapshot, waits = self.snapshot()
        now = self.source.registry.now()
        return build_table(snapshot, filters, waits=waits, lints=self.lints(), now=now)

    def lints(self) -> list[dict[str, Any]]:
        """Every current lint, as plain data."""
        return [
            item.to_dict() for item in lint(self.source.registry, grace_sec=self.lint_grace_sec)
        ]

    def thread(self, record_id: int) -> ThreadDetail | None:
        """One thread's detail, or None when the registry does not know the id."""
        snapshot = self._registry_snapshot()
        info = snapshot.by_id(record_id)
        if info is None:
            return None
        state, wait = effective_state(info, self.waits.classify([info.ident] if info.ident else []))
        stack: list[dict[str, Any]] = []
        source = "none"
        taken: float | None = None
        if self.live and info.state.alive and info.ident is not None:
            taken = time.time()
            live = capture_stack(info.ident)
            if live is not None:
                stack, source = clean_frames(live), "live"
        if not stack and info.captured_stack:
            stack, source = clean_frames(info.captured_stack), "captured"
            captures = [e for e in info.events if e.type is EventType.STACK_CAPTURED]
            taken = captures[-1].wall_time if captures else None
        if not stack:
            taken = None
        names = {t.record_id: t.name for t in snapshot.threads}
        children = [(t.record_id, t.name) for t in snapshot.threads if t.parent_id == record_id]
        lints = [item for item in self.lints() if record_id in item.get("thread_ids", ())]
        return ThreadDetail(
            info=info,
            stack=stack,
            stack_source=source,
            state=state,
            waits_on=wait,
            lints=lints,
            parent_name=names.get(info.parent_id) if info.parent_id is not None else None,
            children=children,
            stack_captured_wall=taken,
        )

    def pyspy(self, info: ThreadInfo) -> PySpyResult:
        """Dump the process with py-spy and pick out this thread (blocking: run off-loop)."""
        if not self.allow_pyspy:
            return PySpyResult(False, "py-spy dumps are disabled for this dashboard")
        if not info.state.alive or info.ident is None:
            return PySpyResult(False, f"thread {info.name!r} is not running ({info.state.value})")
        if not self._pyspy_lock.acquire(blocking=False):
            return PySpyResult(False, "another py-spy dump is running; try again when it ends")
        taken = time.time()
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
        return PySpyResult(True, None, mine, holders, threads, taken_wall=taken)

    def timelines(self) -> list[ShutdownTimeline]:
        """Kept shutdown timelines, newest first."""
        return list(reversed(self.source.timelines()))
