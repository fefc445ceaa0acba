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
from ._kinds import EventType, JoinOutcome, ThreadKind
from ._phases import SHUTDOWN_PHASES
from ._registry import ThreadRegistry
from ._rules import check_rules
from ._stacks import capture_stack, frames_of, trim_bookkeeping
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
        # When each of those stacks was captured (epoch s): a stack says when it was taken.
        self._stack_walls: dict[int, float] = {}
        # The phase running now and the joins it made (for its outcome and its threads).
        self._phase: PhaseRecord | None = None
        self._joins: list[dict[str, Any]] = []
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
            if event.type is EventType.JOIN and event.record_id is not None:
                self._joins.append(_join_entry(event))
            if event.record_id is not None and event.type is EventType.SPAWN:
                record = self._registry.get(event.record_id)
                if record is not None:
                    self.timeline.threads[record.record_id] = ThreadRegistry._info(record)
                # Runs in the spawning thread: its stack shows who spawned during shutdown.
                spawner = trim_bookkeeping(frames_of(sys._getframe(1)))
                if event.record_id not in self._stacks:
                    self._stacks[event.record_id] = spawner
                    self._stack_walls[event.record_id] = event.wall_time
            elif event.type is EventType.DB_CLOSE:
                for record in self._registry.live_records():
                    if record.kind is ThreadKind.FOREIGN or record.ident is None:
                        continue
                    if record.record_id not in self._stacks:
                        frames = capture_stack(record.ident)
                        if frames is not None:
                            self._stacks[record.record_id] = frames
                            self._stack_walls[record.record_id] = event.wall_time
            elif event.type is EventType.STACK_CAPTURED and event.record_id is not None:
                record = self._registry.get(event.record_id)
                if record is not None and record.captured_stack:
                    self._stacks[record.record_id] = list(record.captured_stack)
                    self._stack_walls[record.record_id] = event.wall_time

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
        with self._lock:
            self.timeline.phases.append(rec)
            self._phase, self._joins = rec, []
        self._registry.emit(EventType.PHASE_START, None, phase=name, index=index)
        try:
            yield rec
        except BaseException as exc:
            rec.outcome = "error"
            rec.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            with self._lock:
                joins, self._phase, self._joins = self._joins, None, []
                timed_out = [j for j in joins if j["outcome"] != JoinOutcome.JOINED.value]
                # Who the phase waited on: every join that timed out, else its longest one.
                longest = max(joins, key=lambda j: float(j["duration"] or 0.0), default=None)
                rec.threads = timed_out or ([longest] if longest is not None else [])
                if rec.outcome == "running":
                    rec.outcome = "timeout" if timed_out else "ok"
                rec.end_mono = self._registry.now()
            self._registry.emit(
                EventType.PHASE_END, None, phase=name, index=index, outcome=rec.outcome
            )

    def live(self) -> ShutdownTimeline:
        """A consistent copy of the timeline so far, for a dashboard to show while it runs.

        ``progress`` says what the shutdown waits on now: the phase, and during a join the
        thread (its workflow and step, for an executor), how long so far, and its stack
        with the moment it was captured. Never raises.
        """
        with self._lock:
            t = self.timeline
            view = ShutdownTimeline(
                shutdown_id=t.shutdown_id,
                service=t.service,
                planned_phases=t.planned_phases,
                started_wall=t.started_wall,
                started_mono=t.started_mono,
                ended_mono=t.ended_mono,
                phases=[p.copy() for p in t.phases],
                events=list(t.events),
                threads=dict(t.threads),
                violations=list(t.violations),
            )
        if view.ended_mono is None:
            view.progress = self._progress(view)
        return view

    def _progress(self, view: ShutdownTimeline) -> dict[str, Any]:
        now = self._registry.now()
        phase = next((p for p in reversed(view.phases) if p.end_mono is None), None)
        progress: dict[str, Any] = {
            "phase": phase.name if phase else None,
            "phase_elapsed_sec": now - phase.start_mono if phase else None,
            "elapsed_sec": now - view.started_mono,
            "joining": None,
        }
        joining = self._registry.joining
        if joining is not None and phase is not None:
            record, since, timeout = joining
            info = self._registry.info(record)
            frames = capture_stack(record.ident) if record.ident is not None else None
            progress["joining"] = {
                "record_id": info.record_id,
                "name": info.name,
                "kind": info.kind.value,
                "state": info.state.value,
                "waited_sec": max(0.0, now - since),
                "timeout_sec": timeout,
                "workflow_id": info.workflow_id,
                "workflow_name": info.workflow_name,
                "step_id": info.step_id,
                "step_name": info.step_name,
                "stack": frames,
                "stack_captured_wall": time.time(),
            }
        return progress

    def finish(self) -> ShutdownTimeline:
        """Stop recording, run the rules and return the finished timeline."""
        self._registry.emit(EventType.SHUTDOWN_END, None, shutdown_id=self.timeline.shutdown_id)
        if self._remove_listener is not None:
            self._remove_listener()
        self.timeline.ended_mono = self._registry.now()
        with self._lock:
            stacks = dict(self._stacks)
            walls = dict(self._stack_walls)
        for record in self._registry.live_records():
            if record.kind is not ThreadKind.FOREIGN and record.ident is not None:
                frames = capture_stack(record.ident)
                if frames is not None and record.record_id not in stacks:
                    # A stack from the moment of the evidence beats one taken now.
                    stacks[record.record_id] = frames
                    walls[record.record_id] = time.time()
        self.timeline.stacks_captured_wall = {str(k): v for k, v in walls.items()}
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


def _join_entry(event: LifecycleEvent) -> dict[str, Any]:
    """One join of a phase, as its ``threads`` entry."""
    a = event.attrs
    return {
        "record_id": event.record_id,
        "name": event.thread_name,
        "kind": event.kind.value if event.kind else None,
        "outcome": a.get("outcome"),
        "duration": a.get("duration"),
        "workflow_id": a.get("workflow_id"),
        "workflow_name": a.get("workflow_name"),
        "step_name": a.get("step_name"),
    }
