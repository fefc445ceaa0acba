"""Recording a shutdown as it runs: phases and prepare steps, then the judged timeline.

Apart from ``_timeline`` (the records and their JSON) because it is the one piece that
runs the ordering rules, which read those records: keeping it there made the two modules
import each other.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from ._events import LifecycleEvent
from ._kinds import EventType, ThreadKind
from ._phases import SHUTDOWN_PHASES
from ._registry import ThreadRegistry
from ._rules import check_rules
from ._stacks import capture_stack, frames_of
from ._timeline import PhaseRecord, ShutdownTimeline


class ShutdownRecorder:
    """Records one shutdown: call :meth:`begin`, run each phase in :meth:`phase`, then
    :meth:`finish`, which runs the ordering rules over what was recorded."""

    def __init__(
        self,
        registry: ThreadRegistry,
        *,
        service: str = "",
        phases: Sequence[str] = SHUTDOWN_PHASES,
    ) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._remove_listener: Any = None
        self._begun = False
        self._prepare_steps = 0
        # Stacks taken when the evidence happened (a DB closed under a live thread, a spawn
        # during shutdown), not at finish(), when the thread may be gone.
        self._stacks: dict[int, list[dict[str, Any]]] = {}
        self.timeline = ShutdownTimeline(
            shutdown_id=uuid.uuid4().hex,
            service=service,
            planned_phases=tuple(phases),
            started_wall=time.time(),
            started_mono=registry.now(),
        )

    def _on_event(self, event: LifecycleEvent) -> None:
        with self._lock:
            self.timeline.events.append(event)
            if event.record_id is not None and event.type is EventType.SPAWN:
                record = self._registry.get(event.record_id)
                if record is not None:
                    self.timeline.threads[record.record_id] = ThreadRegistry._info(record)
                # Runs in the spawning thread: its stack shows who spawned during shutdown.
                self._stacks.setdefault(event.record_id, frames_of(sys._getframe(1)))
            elif event.type is EventType.DB_CLOSE:
                for record in self._registry.live_records():
                    if record.kind is ThreadKind.FOREIGN or record.ident is None:
                        continue
                    if record.record_id not in self._stacks:
                        frames = capture_stack(record.ident)
                        if frames is not None:
                            self._stacks[record.record_id] = frames
            elif event.type is EventType.STACK_CAPTURED and event.record_id is not None:
                record = self._registry.get(event.record_id)
                if record is not None and record.captured_stack:
                    self._stacks[record.record_id] = list(record.captured_stack)

    def begin(self) -> None:
        """Start recording: every event from now on belongs to this timeline."""
        if self._begun:
            raise RuntimeError("ShutdownRecorder.begin() called twice")
        self._begun = True
        self._remove_listener = self._registry.add_listener(self._on_event)
        for record in self._registry.live_records():
            self.timeline.threads[record.record_id] = ThreadRegistry._info(record)
        self._registry.emit(EventType.SHUTDOWN_BEGIN, None, shutdown_id=self.timeline.shutdown_id)

    @contextlib.contextmanager
    def prepare(self, name: str) -> Iterator[None]:
        """Run one step before phase 1, recorded as ``shutdown.prepare.start``/``.end`` events.

        Not a phase: the report's ``phases`` (and the rule on their order) stay the planned
        ones. An exception is recorded in the end event's ``outcome`` and ``error``, and raised.
        """
        if not self._begun or self.timeline.phases:
            raise RuntimeError("ShutdownRecorder.prepare() runs after begin(), before phase 1")
        self._prepare_steps += 1
        index = self._prepare_steps
        self._registry.emit(EventType.PREPARE_START, None, step=name, index=index)
        outcome, error = "error", None
        try:
            yield
            outcome = "ok"
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._registry.emit(
                EventType.PREPARE_END, None, step=name, index=index, outcome=outcome, error=error
            )

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseRecord]:
        """Run one phase: records start, end and outcome; an exception is recorded, not hidden."""
        index = len(self.timeline.phases) + 1
        rec = PhaseRecord(index, name, time.time(), self._registry.now())
        self.timeline.phases.append(rec)
        self._registry.emit(EventType.PHASE_START, None, phase=name, index=index)
        try:
            yield rec
        except BaseException as exc:
            rec.outcome = "error"
            rec.error = f"{type(exc).__name__}: {exc}"
            raise
        else:
            if rec.outcome == "running":
                rec.outcome = "ok"
        finally:
            rec.end_mono = self._registry.now()
            self._registry.emit(
                EventType.PHASE_END, None, phase=name, index=index, outcome=rec.outcome
            )

    def finish(self) -> ShutdownTimeline:
        """Stop recording, run the rules and return the finished timeline."""
        self._registry.emit(EventType.SHUTDOWN_END, None, shutdown_id=self.timeline.shutdown_id)
        if self._remove_listener is not None:
            self._remove_listener()
        self.timeline.ended_mono = self._registry.now()
        with self._lock:
            stacks = dict(self._stacks)
        for record in self._registry.live_records():
            if record.kind is not ThreadKind.FOREIGN and record.ident is not None:
                frames = capture_stack(record.ident)
                if frames is not None:
                    # A stack from the moment of the evidence beats one taken now.
                    stacks.setdefault(record.record_id, frames)
        # A stop event counts only if its thread was alive when shutdown began (or it has no
        # thread): a thread that finished its work and exited before had nothing to stop.
        unset = [
            e.name
            for e in self._registry.unset_stop_events()
            if e.thread_record_id is None
            or (
                e.thread_record_id in self.timeline.threads
                and self.timeline.threads[e.thread_record_id].state.alive
            )
        ]
        self.timeline.violations = check_rules(self.timeline, stacks=stacks, unset_stops=unset)
        return self.timeline
