"""Timeout enforcement: one thread and a heap of deadlines, however many workflows wait."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

from spindle.diagnostics import Clock, RealClock, StopEvent, ThreadKind

from ._supervisor import Supervised, Supervisor

logger = logging.getLogger("spindle")


class TimeoutEnforcer:
    """Cancels workflows past their deadline from a single ``dbos-timeout-enforcer`` thread.

    Deadlines live in a heap keyed by time; removal is lazy (a stale heap entry is skipped
    when it surfaces), so add and remove are O(log n) and 10,000 deadlines add no thread.
    Shutdown phase 2 (``signal_internal``) stops it by setting its supervised stop event.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        on_expire: Callable[[str], None],
        clock: Clock | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._on_expire = on_expire
        self._clock: Clock = clock or RealClock()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str]] = []
        self._deadlines: dict[str, float] = {}
        self._seq = itertools.count()
        self.thread: Supervised | None = None

    def start(self) -> None:
        """Spawn the enforcer thread."""
        self.thread = self._supervisor.spawn(ThreadKind.TIMEOUT, "dbos-timeout-enforcer", self._run)

    def add(self, workflow_id: str, deadline_epoch_sec: float) -> None:
        """Watch a workflow's deadline."""
        with self._cond:
            self._deadlines[workflow_id] = deadline_epoch_sec
            heapq.heappush(self._heap, (deadline_epoch_sec, next(self._seq), workflow_id))
            # Only an earlier-than-every-other deadline changes how long the thread waits.
            if self._heap[0][2] == workflow_id:
                self._cond.notify()

    def remove(self, workflow_id: str) -> None:
        """Stop watching a workflow (it finished)."""
        with self._cond:
            self._deadlines.pop(workflow_id, None)
            # Compact when stale entries dominate, so memory follows live deadlines.
            if len(self._heap) > 64 and len(self._heap) > 4 * len(self._deadlines):
                self._heap = [(d, s, w) for d, s, w in self._heap if self._deadlines.get(w) == d]
                heapq.heapify(self._heap)

    def entries(self) -> list[tuple[str, float]]:
        """Pending deadlines (workflow id, epoch seconds), soonest first: the timer entries."""
        with self._cond:
            return sorted(self._deadlines.items(), key=lambda kv: kv[1])

    def __len__(self) -> int:
        with self._cond:
            return len(self._deadlines)

    def _run(self, stop: StopEvent) -> None:
        stop.add_callback(self._notify)
        while not stop.is_set():
            expired: list[str] = []
            with self._cond:
                now = self._clock.now()
                while self._heap and self._heap[0][0] <= now:
                    deadline, _, wf = heapq.heappop(self._heap)
                    if self._deadlines.get(wf) == deadline:
                        del self._deadlines[wf]
                        expired.append(wf)
                if not expired:
                    timeout = self._heap[0][0] - now if self._heap else None
                    if not stop.is_set():
                        self._clock.wait(self._cond, timeout)
                    continue
            for wf in expired:
                try:
                    self._on_expire(wf)
                except Exception:
                    logger.exception("spindle: cancelling timed-out workflow %s failed", wf)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
