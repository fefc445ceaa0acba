"""Ordering rules over a recorded shutdown: they judge what happened, not what was planned."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._events import LifecycleEvent
from ._kinds import EventType, JoinOutcome, ThreadGroup, ThreadKind
from ._phases import PHASES_BY_NAME, WAIT_WORKFLOWS, PhaseSpec
from ._timeline import ShutdownTimeline, Violation

#: Rule ids, each with the sentence a human reads when it breaks.
RULES: dict[str, str] = {
    "db-closed-while-thread-alive": (
        "A database was closed while a runtime thread that may use it was still alive: "
        "that thread's next query fails or hangs."
    ),
    "pollers-not-signalled-first": (
        "An internal thread was signalled before every poller was: a poller may start a "
        "workflow that internal threads are no longer there to run."
    ),
    "spawn-after-shutdown-began": (
        "A thread was spawned after shutdown began: nothing will signal or join it in time."
    ),
    "join-before-db-interrupt": (
        "Threads were joined before blocking database calls were interrupted: a thread "
        "blocked in the database makes the join wait out its whole timeout."
    ),
    "thread-not-joined-before-db-close": (
        "A thread had no join outcome when the databases closed."
    ),
    "stop-event-never-set": "A registered stop event was never set during shutdown.",
    "join-timeout": "A thread outlived its join timeout; see its stack.",
    "phases-out-of-order": "Shutdown phases did not run once each, in the planned order.",
    "conductor-stopped-before-drain": (
        "The conductor connection was stopped before the workflow drain ended: a conductor "
        "no longer sees the last workflows finish (DBOS issue #824)."
    ),
}


#: What a rule found: the event seq where it broke (``_WHOLE_RUN`` for whole-run rules, sorted
#: last) and the violation. Sorting by seq keeps the report in the order things happened.
_Found = tuple[int, Violation]
_WHOLE_RUN = sys.maxsize


def _is_runtime(kind: ThreadKind | None) -> bool:
    return kind is not None and kind is not ThreadKind.FOREIGN


@dataclass(slots=True)
class _Run:
    """What every rule reads: the timeline's events in seq order and its threads."""

    timeline: ShutdownTimeline
    stacks: dict[int, list[dict[str, Any]]]
    unset_stops: Sequence[str]
    events: list[LifecycleEvent] = field(init=False)
    alive_at_begin: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.events = sorted(self.timeline.events, key=lambda e: e.seq)
        self.alive_at_begin = {
            i for i, t in self.timeline.threads.items() if _is_runtime(t.kind) and t.state.alive
        }

    def phase_at(self, seq: int) -> str | None:
        """The phase that had started last at event ``seq``."""
        current = None
        for e in self.events:
            if e.seq > seq:
                break
            if e.type is EventType.PHASE_START:
                current = str(e.attrs.get("phase"))
        return current

    def violation(self, rule: str, seq: int, ids: Sequence[int], extra: str = "") -> _Found:
        """A violation of ``rule`` at event ``seq`` by these threads, with their stacks."""
        threads = self.timeline.threads
        names = tuple(threads[i].name if i in threads else f"#{i}" for i in ids)
        message = RULES[rule] + (f" {extra}" if extra else "")
        if rule != "join-timeout":  # that one names the workflow as of the join itself
            for i in ids:
                info = threads.get(i)
                if info is not None and info.workflow_id is not None:
                    message += f" {info.name} was running {info.work_text()}."
        found = Violation(
            rule=rule,
            phase=self.phase_at(seq),
            message=message,
            thread_ids=tuple(ids),
            thread_names=names,
            stacks={str(i): self.stacks[i] for i in ids if i in self.stacks},
        )
        return seq, found

    def whole_run(self, rule: str, extra: str) -> _Found:
        """A violation of a rule about the whole run (no phase, no thread)."""
        return _WHOLE_RUN, Violation(rule=rule, phase=None, message=f"{RULES[rule]} {extra}")

    def runtime_spawns(self) -> Iterator[LifecycleEvent]:
        """Spawn events of runtime threads (not foreign ones)."""
        for e in self.events:
            if e.type is EventType.SPAWN and e.record_id is not None and _is_runtime(e.kind):
                yield e


def _spawn_after_shutdown_began(run: _Run) -> list[_Found]:
    # "Began" is phase 1: the prepare steps before it exist to stop the spawners (poller
    # gate, queue manager), so a spawn they let finish is signalled and joined as usual.
    out: list[_Found] = []
    started = False
    executor_down = False
    for e in run.events:
        if e.type is EventType.PHASE_START:
            started = True
        elif e.type is EventType.PHASE_END and _spec(e).stops_executor:
            executor_down = True
        elif e.type is EventType.SPAWN and e.record_id is not None and _is_runtime(e.kind):
            # The executor grows its pool lazily while active workflows finish (phase 3):
            # a worker made before the executor is shut down is not a spawn to flag.
            growing_pool = e.group is ThreadGroup.EXECUTOR and not executor_down
            if started and not growing_pool:
                out.append(run.violation("spawn-after-shutdown-began", e.seq, [e.record_id]))
    return out


def _pollers_not_signalled_first(run: _Run) -> list[_Found]:
    threads = run.timeline.threads
    pending = {
        i
        for i in run.alive_at_begin
        if threads[i].group is ThreadGroup.POLLER and threads[i].stop_event_set is False
    }
    early: list[LifecycleEvent] = []
    for e in run.events:
        if e.type is EventType.STOP_EVENT_SET:
            group = e.attrs.get("stop_group")
            if group == ThreadGroup.POLLER.value and e.record_id is not None:
                pending.discard(e.record_id)
            elif group == ThreadGroup.INTERNAL.value and pending:
                early.append(e)
        elif e.type is EventType.EXIT and e.record_id is not None:
            # A poller that exited on its own no longer needs signalling first.
            pending.discard(e.record_id)
    if not early:
        return []
    ids = [e.record_id for e in early if e.record_id is not None]
    return [(_WHOLE_RUN, run.violation("pollers-not-signalled-first", early[0].seq, ids)[1])]


def _join_before_db_interrupt(run: _Run) -> list[_Found]:
    early: list[LifecycleEvent] = []
    interrupted = False
    current: PhaseSpec | None = None
    for e in run.events:
        if e.type is EventType.PHASE_START:
            current = _spec(e)
        elif e.type is EventType.PHASE_END:
            interrupted = interrupted or _spec(e).interrupts_db
            current = None
        elif e.type is EventType.DB_INTERRUPT:
            # What happened counts, even when the runtime interrupts outside the phase.
            interrupted = True
        elif e.type is EventType.JOIN and e.record_id is not None:
            # A phase that stops its own kind (event loop, admin server, listener) joins it.
            own_phase = current is not None and e.kind in current.own_kinds
            if not interrupted and not own_phase:
                early.append(e)
    if not early:
        return []
    ids = [e.record_id for e in early if e.record_id is not None]
    return [(_WHOLE_RUN, run.violation("join-before-db-interrupt", early[0].seq, ids)[1])]


def _join_timeout(run: _Run) -> list[_Found]:
    return [
        run.violation("join-timeout", e.seq, [e.record_id], _why_not_joined(e))
        for e in run.events
        if e.type is EventType.JOIN
        and e.record_id is not None
        and e.attrs.get("outcome") != JoinOutcome.JOINED.value
    ]


def _why_not_joined(e: LifecycleEvent) -> str:
    """Per kind: an executor worker has no stop event, it runs user code to its end."""
    a = e.attrs
    if e.kind is ThreadKind.EXECUTOR:
        if a.get("workflow_id") is None:
            return "The executor worker was running no workflow: see its stack."
        where = f"workflow {a.get('workflow_name')} ({a.get('workflow_id')})"
        if a.get("step_name") is not None:
            where += f", step {a.get('step_name')} (function id {a.get('step_id')})"
        return (
            f"The executor worker is still in {where}: a worker has no stop event, the "
            "workflow stops at its next durable boundary, and this call has not returned."
        )
    if e.kind is ThreadKind.FOREIGN or e.kind is None:
        return "It is not a runtime thread."
    return "It ignored its stop event, or is blocked in a call its stop event cannot wake."


def _db_closes(run: _Run) -> Iterator[tuple[LifecycleEvent, list[int], list[int]]]:
    """Each ``db.close`` with the runtime threads then alive and those exited but not joined."""
    runtime_ids = {i for i, t in run.timeline.threads.items() if _is_runtime(t.kind)}
    spawned: set[int] = set()
    exited: set[int] = set()
    joined: set[int] = set()
    for e in run.events:
        if e.type is EventType.SPAWN and e.record_id is not None and _is_runtime(e.kind):
            spawned.add(e.record_id)
            runtime_ids.add(e.record_id)
        elif e.type is EventType.EXIT and e.record_id is not None:
            exited.add(e.record_id)
        elif e.type is EventType.JOIN and e.record_id is not None:
            if e.attrs.get("outcome") == JoinOutcome.JOINED.value:
                joined.add(e.record_id)
        elif e.type is EventType.DB_CLOSE:
            relevant = run.alive_at_begin | spawned
            alive = sorted(i for i in relevant - exited if i in runtime_ids)
            yield e, alive, sorted(relevant - joined - set(alive))


def _db_closed_while_thread_alive(run: _Run) -> list[_Found]:
    return [
        run.violation(
            "db-closed-while-thread-alive",
            e.seq,
            alive,
            f"Database: {e.attrs.get('database', '?')}.",
        )
        for e, alive, _ in _db_closes(run)
        if alive
    ]


def _thread_not_joined_before_db_close(run: _Run) -> list[_Found]:
    # A thread still alive at the close is the rule above; this one is for exited threads.
    return [
        run.violation("thread-not-joined-before-db-close", e.seq, not_joined)
        for e, _, not_joined in _db_closes(run)
        if not_joined
    ]


def _stop_event_never_set(run: _Run) -> list[_Found]:
    if not run.unset_stops:
        return []
    return [run.whole_run("stop-event-never-set", ", ".join(sorted(run.unset_stops)))]


def _conductor_stopped_before_drain(run: _Run) -> list[_Found]:
    # Only judged when the drain is part of the plan: a shutdown without one has no "after".
    if WAIT_WORKFLOWS.name not in run.timeline.planned_phases:
        return []
    out: list[_Found] = []
    drained = False
    for e in run.events:
        if e.type is EventType.PHASE_END and e.attrs.get("phase") == WAIT_WORKFLOWS.name:
            drained = True
        elif (
            e.type is EventType.STOP_EVENT_SET
            and e.kind is ThreadKind.CONDUCTOR
            and e.record_id is not None
            and not drained
        ):
            out.append(run.violation("conductor-stopped-before-drain", e.seq, [e.record_id]))
    return out


def _phases_out_of_order(run: _Run) -> list[_Found]:
    ran = [str(e.attrs.get("phase")) for e in run.events if e.type is EventType.PHASE_START]
    planned = list(run.timeline.planned_phases)
    if ran == planned:
        return []
    return [run.whole_run("phases-out-of-order", f"Planned {planned}, ran {ran}.")]


def _spec(event: LifecycleEvent) -> PhaseSpec:
    """The spec of a phase event; a phase the specs do not know has no flags."""
    name = str(event.attrs.get("phase"))
    return PHASES_BY_NAME.get(name) or PhaseSpec(name, "")


#: Every rule, in report order (ties on the same event keep this order).
RULE_CHECKS: tuple[Callable[[_Run], list[_Found]], ...] = (
    _spawn_after_shutdown_began,
    _join_timeout,
    _db_closed_while_thread_alive,
    _thread_not_joined_before_db_close,
    _pollers_not_signalled_first,
    _join_before_db_interrupt,
    _conductor_stopped_before_drain,
    _stop_event_never_set,
    _phases_out_of_order,
)


def check_rules(
    timeline: ShutdownTimeline,
    *,
    stacks: dict[int, list[dict[str, Any]]] | None = None,
    unset_stops: Sequence[str] = (),
) -> list[Violation]:
    """Every violation of the design's ordering rules in this timeline (empty when clean)."""
    run = _Run(timeline, stacks or {}, unset_stops)
    found = [f for check in RULE_CHECKS for f in check(run)]
    # Stable: violations at one event keep RULE_CHECKS order; whole-run ones come last.
    found.sort(key=lambda f: f[0])
    # A DB close with a dead set is also reported as not-joined; keep one record per thread.
    return _dedupe([v for _, v in found])


def _dedupe(violations: list[Violation]) -> list[Violation]:
    seen: set[tuple[str, tuple[int, ...], str | None]] = set()
    out = []
    for v in violations:
        key = (v.rule, v.thread_ids, v.phase)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out
