"""What the dashboard reads: a narrow, read-only view of a runtime's diagnostics."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Protocol, runtime_checkable

from spindle.diagnostics import (
    DiagnosticsSession,
    EventType,
    JoinOutcome,
    LifecycleEvent,
    RegistrySnapshot,
    ShutdownTimeline,
    ThreadInfo,
    ThreadRegistry,
    ThreadState,
)


@runtime_checkable
class DashboardSource(Protocol):
    """The read-only view the dashboard needs: a registry, shutdown timelines, a name."""

    @property
    def registry(self) -> ThreadRegistry:
        """The live thread registry."""
        ...

    @property
    def service_name(self) -> str:
        """The app's name, shown in the page title."""
        ...

    def timelines(self) -> list[ShutdownTimeline]:
        """The latest shutdown timelines, oldest first."""
        ...


class SessionSource:
    """Adapts a :class:`DiagnosticsSession` (whose ``timelines`` is a property) to the protocol."""

    def __init__(self, session: DiagnosticsSession) -> None:
        self._session = session

    @property
    def registry(self) -> ThreadRegistry:
        """The session's registry."""
        return self._session.registry

    @property
    def service_name(self) -> str:
        """The session's service name."""
        return self._session.service_name

    def timelines(self) -> list[ShutdownTimeline]:
        """The session's kept timelines, oldest first."""
        return self._session.timelines

    @property
    def stuck_grace_sec(self) -> float:
        """The session's grace before a signalled thread is stuck (used by the lints)."""
        return self._session.stuck_grace_sec


class _ReportThreads(ThreadRegistry):
    """A registry that shows a saved report's threads, as the report left them.

    The viewer's own threads are not the app's: none of them appears (no foreign threads),
    and no stack is taken live (the idents belong to a process that is gone).
    """

    def __init__(self, timeline: ShutdownTimeline | None) -> None:
        super().__init__(max_exited=0)
        self._timeline = timeline

    def now(self) -> float:
        """The end of the report (its last recorded moment)."""
        t = self._timeline
        if t is None:
            return 0.0
        monos = [t.started_mono, *(e.mono for e in t.events)]
        return max([t.ended_mono or t.started_mono, *monos])

    def snapshot(
        self, *, include_foreign: bool = False, with_waiting: bool = True
    ) -> RegistrySnapshot:
        """The report's threads (its ``threads``, as the report recorded them)."""
        t = self._timeline
        if t is None:
            return RegistrySnapshot(0.0, 0.0, (), ())
        infos = tuple(_final(info, t) for info in t.threads.values())
        wall = t.started_wall + (self.now() - t.started_mono)
        return RegistrySnapshot(wall, self.now(), infos, ())

    def foreign_threads(self) -> list[tuple[int, threading.Thread]]:
        """None: see the class."""
        return []


def _final(info: ThreadInfo, timeline: ShutdownTimeline) -> ThreadInfo:
    """A report's thread as the shutdown left it: exit and join from its events."""
    state, stopped, joined, outcome, duration = info.state, info.stopped_mono, None, None, None
    for e in timeline.events:
        if e.record_id != info.record_id:
            continue
        if e.type is EventType.EXIT:
            try:
                state = ThreadState(str(e.attrs.get("outcome")))
            except ValueError:
                state = ThreadState.EXITED_OK
            stopped = e.mono
        elif e.type is EventType.JOIN:
            joined, duration = e.mono, e.attrs.get("duration")
            outcome = JoinOutcome(str(e.attrs.get("outcome", "joined")))
            if outcome is JoinOutcome.TIMEOUT and state.alive:
                state = ThreadState.LEAKED
    return replace(
        info,
        state=state,
        stopped_mono=stopped,
        joined_mono=joined or info.joined_mono,
        join_outcome=outcome or info.join_outcome,
        join_duration=duration if duration is not None else info.join_duration,
        events=tuple(e for e in timeline.events if e.record_id == info.record_id)[-64:],
    )


class ReportSource:
    """Saved timelines with no live runtime behind them (the offline viewer's source)."""

    #: No live threads: the dashboard takes no live stacks and samples no states.
    live = False

    def __init__(self, timelines: list[ShutdownTimeline], *, service_name: str = "") -> None:
        self._timelines = list(timelines)
        # The threads shown are the latest report's, never the viewer's own.
        self._registry = _ReportThreads(self._timelines[-1] if self._timelines else None)
        self._service = service_name or (timelines[-1].service if timelines else "") or "report"

    @property
    def registry(self) -> ThreadRegistry:
        """The report's threads, as a read-only registry."""
        return self._registry

    @property
    def service_name(self) -> str:
        """The service named in the report."""
        return self._service

    def timelines(self) -> list[ShutdownTimeline]:
        """The loaded timelines."""
        return list(self._timelines)

    def history_events(self) -> list[LifecycleEvent]:
        """The latest report's events, replayed into the history."""
        return list(self._timelines[-1].events) if self._timelines else []


def as_source(source: DashboardSource | DiagnosticsSession) -> DashboardSource:
    """The source itself, or a :class:`SessionSource` around a session."""
    if isinstance(source, DiagnosticsSession):
        return SessionSource(source)
    return source
