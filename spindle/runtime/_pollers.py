"""Pollers: the threads that start workflows from outside (cron ticks, message sources).

This module holds what every poller shares: the registry the decorators fill, the gate that
shutdown closes, the exactly-once start, and :class:`PollerSet`, which starts them all at
``launch()``. The cron loop lives in ``_cron.py``, the schedules table in ``_schedules.py``
and message sources in ``_receivers.py``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spindle.diagnostics import StopEvent

from ._core import prepare_workflow
from ._functions import WorkflowInfo

if TYPE_CHECKING:
    from ._dbos import DBOS
    from ._receivers import EventSource
    from ._schedules import DynamicScheduler

logger = logging.getLogger("spindle")


class PollerGate:
    """Admits pollers' workflow starts (and spawns) until shutdown closes it.

    Many pollers may be inside at once (a count, not a lock, so starts never serialise);
    :meth:`close` refuses new entries and waits for the ones inside. ``destroy()`` closes
    the gate before shutdown phase 1, so no poller starts a workflow or spawns a thread
    once the shutdown is being recorded: checking the stop event alone would leave a
    window between the check and the start.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._closed = False

    @contextlib.contextmanager
    def enter(self) -> Iterator[bool]:
        """Yield True when admitted; False once the gate is closed (do nothing then)."""
        with self._cond:
            admitted = not self._closed
            if admitted:
                self._inside += 1
        try:
            yield admitted
        finally:
            if admitted:
                with self._cond:
                    self._inside -= 1
                    self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Refuse new entries, wait at most ``timeout`` for those inside; True if none is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            while self._inside:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        with self._cond:
            return self._closed


def start_once(
    rt: DBOS,
    gate: PollerGate,
    stop: StopEvent,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    workflow_id: str,
) -> bool:
    """Start ``info`` with a deterministic ID unless the ID already exists anywhere.

    Returns False when nothing was started: the ID exists (another process, or an earlier
    run, started it), or the poller is stopping. The stop event is checked inside the gate,
    after the caller's wait: a poller never starts a workflow once it was told to stop.
    """
    with gate.enter() as admitted:
        if not admitted or stop.is_set():
            return False
        start = prepare_workflow(rt, info, args, {}, workflow_id=workflow_id, if_new=True)
        rt._dispatch(info, start)
        return start.run is not None


@dataclass(frozen=True, slots=True)
class ScheduledPoller:
    """A ``@DBOS.scheduled`` registration: one workflow on one cron schedule."""

    info: WorkflowInfo
    cron: str


@dataclass(frozen=True, slots=True)
class ReceiverPoller:
    """A ``@DBOS.event_receiver`` registration: one source feeding one workflow."""

    name: str
    info: WorkflowInfo
    source: EventSource
    poll_timeout_sec: float


class PollerRegistry:
    """Decorated pollers of this process (filled at import time, before ``DBOS()``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scheduled: dict[str, ScheduledPoller] = {}
        self.receivers: dict[str, ReceiverPoller] = {}

    def add_scheduled(self, poller: ScheduledPoller) -> None:
        """Register a scheduled workflow (one schedule per workflow, as in DBOS)."""
        with self._lock:
            existing = self.scheduled.get(poller.info.name)
            if existing is not None and existing != poller:
                raise ValueError(f"workflow {poller.info.name!r} is already @DBOS.scheduled")
            self.scheduled[poller.info.name] = poller

    def add_receiver(self, poller: ReceiverPoller) -> None:
        """Register an event receiver; its name prefixes the IDs it starts, so it is unique."""
        with self._lock:
            existing = self.receivers.get(poller.name)
            if existing is not None and existing != poller:
                raise ValueError(f"an event receiver named {poller.name!r} already exists")
            self.receivers[poller.name] = poller

    def snapshot(self) -> tuple[list[ScheduledPoller], list[ReceiverPoller]]:
        """The registrations now."""
        with self._lock:
            return list(self.scheduled.values()), list(self.receivers.values())

    def clear(self) -> None:
        """Forget every registration (``DBOS.destroy(destroy_registry=True)``)."""
        with self._lock:
            self.scheduled.clear()
            self.receivers.clear()


#: Decorators register here, like ``GLOBAL_REGISTRY`` for workflows.
POLLERS = PollerRegistry()


class PollerSet:
    """The pollers of one launch: every scheduled workflow, receiver and the dynamic
    scheduler, sharing one gate."""

    def __init__(self, rt: DBOS) -> None:
        self._rt = rt
        self.gate = PollerGate()
        self.scheduler: DynamicScheduler | None = None

    def start(self) -> None:
        """Spawn one thread per registration, then the dynamic scheduler."""
        # Imported here: those modules import this one for the gate and start_once.
        from ._cron import spawn_scheduled
        from ._receivers import spawn_receiver
        from ._schedules import DynamicScheduler

        scheduled, receivers = POLLERS.snapshot()
        for sp in scheduled:
            spawn_scheduled(self._rt, self.gate, sp)
        for rp in receivers:
            spawn_receiver(self._rt, self.gate, rp)
        self.scheduler = DynamicScheduler(self._rt, self.gate)
        self.scheduler.start()

    def close(self, timeout: float) -> None:
        """Close the gate (before shutdown phase 1); a start still in flight is logged."""
        if not self.gate.close(timeout):
            logger.warning(
                "spindle: a poller was still starting a workflow %.1fs after destroy() began",
                timeout,
            )

    def schedules_changed(self) -> None:
        """Wake the dynamic scheduler: this process changed the schedules table."""
        if self.scheduler is not None:
            self.scheduler.poke()
