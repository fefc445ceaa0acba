"""The pollers of one launch, started together and closed together.

Apart from ``_pollers`` (the shared gate and registries) because it is the one piece that
knows every kind of poller: cron threads, event receivers and the dynamic scheduler.
"""

from __future__ import annotations

import logging

from ._cron import spawn_scheduled
from ._pollers import POLLERS, PollerGate, ScheduledPoller
from ._receivers import spawn_receiver
from ._runtime import Runtime
from ._schedules import DynamicScheduler

logger = logging.getLogger("spindle")


class PollerSet:
    """The pollers of one launch: every scheduled workflow, receiver and the dynamic
    scheduler, sharing one gate."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.gate = PollerGate()
        self.scheduler: DynamicScheduler | None = None
        # The @DBOS.scheduled registrations with a thread: one declared while launch ran
        # is both in launch's snapshot and started by its decorator; it runs once.
        self._started: set[int] = set()

    def start(self) -> None:
        """Spawn one thread per registration, then the dynamic scheduler."""
        scheduled, receivers = POLLERS.snapshot()
        for sp in scheduled:
            self.start_scheduled(sp)
        for rp in receivers:
            spawn_receiver(self._rt, self.gate, rp)
        self.scheduler = DynamicScheduler(self._rt, self.gate)
        self.scheduler.start()

    def start_scheduled(self, poller: ScheduledPoller) -> None:
        """Spawn a ``@DBOS.scheduled`` workflow's thread unless it has one (a decorator
        applied after launch starts its thread at once, as DBOS)."""
        if id(poller) in self._started or self.gate.closed:
            return
        self._started.add(id(poller))
        spawn_scheduled(self._rt, self.gate, poller)

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
