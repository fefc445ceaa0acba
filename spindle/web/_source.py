"""What the dashboard reads: a narrow, read-only view of a runtime's diagnostics."""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from spindle.diagnostics import (
    DiagnosticsSession,
    RegistrySnapshot,
    ShutdownTimeline,
    ThreadRegistry,
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


class _NoThreads(ThreadRegistry):
    """A registry that shows no threads at all, not even this process's own (foreign) ones."""

    def snapshot(
        self, *, include_foreign: bool = False, with_waiting: bool = True
    ) -> RegistrySnapshot:
        """An empty snapshot: the viewer's threads are not the report's."""
        return super().snapshot(include_foreign=False, with_waiting=False)

    def foreign_threads(self) -> list[tuple[int, threading.Thread]]:
        """None: see :meth:`snapshot`."""
        return []


class ReportSource:
    """Saved timelines with no live runtime behind them (the offline viewer's source)."""

    def __init__(self, timelines: list[ShutdownTimeline], *, service_name: str = "") -> None:
        self._timelines = list(timelines)
        # The offline viewer has no live runtime: its own threads must not pose as the app's.
        self._registry = _NoThreads(max_exited=0)
        self._service = service_name or (timelines[-1].service if timelines else "") or "report"

    @property
    def registry(self) -> ThreadRegistry:
        """An empty registry."""
        return self._registry

    @property
    def service_name(self) -> str:
        """The service named in the report."""
        return self._service

    def timelines(self) -> list[ShutdownTimeline]:
        """The loaded timelines."""
        return list(self._timelines)


def as_source(source: DashboardSource | DiagnosticsSession) -> DashboardSource:
    """The source itself, or a :class:`SessionSource` around a session."""
    if isinstance(source, DiagnosticsSession):
        return SessionSource(source)
    return source
