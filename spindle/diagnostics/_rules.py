"""Ordering rules over a recorded shutdown: they judge what happened, not what was planned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._events import LifecycleEvent
from ._kinds import EventType, JoinOutcome, ThreadGroup, ThreadKind
from ._timeline import ShutdownTimeline, Violation

#: Rule ids, each with the sentence a human reads when it breaks.
RULES: dict[str, str] = {
    "db-closed-while-thread-alive": (
        "A database was closed while a runtime thread that may use it was still alive "
        "(the PR #553 bug: that thread's next query fails or hangs)."
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
    "join-timeout": (
        "A thread outlived its join timeout: it ignored its stop event or is blocked; "
        "see its stack."
    ),
    "phases-out-of-order": "Shutdown phases did not run once each, in the planned order.",
}


# Threads that a phase before interrupt_db stops and joins on purpose: the event loop, the
# admin server and the notification listener (interrupted by closing its own connection).
# Their join in their own phase is not "joining before blocking DB calls were interrupted".
_OWN_STOP_PHASE = {
    "stop_event_loop": ThreadKind.EVENT_LOOP,
    "stop_admin_server": ThreadKind.ADMIN_SERVER,
    "stop_notification_listener": ThreadKind.NOTIFICATION_LISTENER,
}


def _is_runtime(kind: ThreadKind | None) -> bool:
    return kind is not None and kind is not ThreadKind.FOREIGN


def check_rules(
    timeline: ShutdownTimeline,
    *,
    stacks: dict[int, list[dict[str, Any]]] | None = None,
    unset_stops: Sequence[str] = (),
) -> list[Violation]:
    """Every violation of the design's ordering rules in this timeline (empty when clean)."""
    stacks = stacks or {}
    events = sorted(timeline.events, key=lambda e: e.seq)
    out: list[Violation] = []

    def phase_at(seq: int) -> str | None:
        current = None
        for e in events:
            if e.seq > seq:
                break
            if e.type is EventType.PHASE_START:
                current = str(e.attrs.get("phase"))
        return current

    def violation(rule: str, seq: int | None, ids: Sequence[int], extra: str = "") -> Violation:
        names = tuple(timeline.threads[i].name if i in timeline.threads else f"#{i}" for i in ids)
        message = RULES[rule] + (f" {extra}" if extra else "")
        return Violation(
            rule=rule,
            phase=phase_at(seq) if seq is not None else None,
            message=message,
            thread_ids=tuple(ids),
            thread_names=names,
            stacks={str(i): stacks[i] for i in ids if i in stacks},
        )

    runtime_ids = {i for i, t in timeline.threads.items() if _is_runtime(t.kind)}
    alive_at_begin = {
        i for i, t in timeline.threads.items() if _is_runtime(t.kind) and t.state.alive
    }
    exited: set[int] = set()
    joined: set[int] = set()
    spawned_during: set[int] = set()
    shutdown_seq: int | None = None
    executor_down = False
    current_phase: str | None = None
    early_joins: list[LifecycleEvent] = []
    interrupted = False
    internal_set_before_poller: list[LifecycleEvent] = []
    pollers_pending = {
        i
        for i in alive_at_begin
        if timeline.threads[i].group is ThreadGroup.POLLER
        and timeline.threads[i].stop_event_set is False
    }

    for e in events:
        if e.type is EventType.SHUTDOWN_BEGIN or (
            e.type is EventType.PHASE_START and shutdown_seq is None
        ):
            shutdown_seq = e.seq if shutdown_seq is None else shutdown_seq
        if e.type is EventType.PHASE_START:
            current_phase = str(e.attrs.get("phase"))
        elif e.type is EventType.PHASE_END:
            if e.attrs.get("phase") == "interrupt_db":
                interrupted = True
            elif e.attrs.get("phase") == "shutdown_executor":
                executor_down = True
            current_phase = None
        elif e.type is EventType.DB_INTERRUPT:
            # What happened counts, even when the runtime interrupts outside the phase.
            interrupted = True
        elif e.type is EventType.SPAWN and e.record_id is not None:
            if _is_runtime(e.kind):
                spawned_during.add(e.record_id)
                runtime_ids.add(e.record_id)
                # The executor grows its pool lazily while active workflows finish (phase
                # 3): a worker made before executor shutdown is not a spawn to flag.
                growing_pool = e.group is ThreadGroup.EXECUTOR and not executor_down
                if shutdown_seq is not None and not growing_pool:
                    out.append(violation("spawn-after-shutdown-began", e.seq, [e.record_id]))
        elif e.type is EventType.STOP_EVENT_SET:
            group = e.attrs.get("stop_group")
            if group == ThreadGroup.POLLER.value and e.record_id is not None:
                pollers_pending.discard(e.record_id)
            elif group == ThreadGroup.INTERNAL.value and pollers_pending:
                internal_set_before_poller.append(e)
        elif e.type is EventType.EXIT and e.record_id is not None:
            exited.add(e.record_id)
            # A poller that exited on its own no longer needs signalling first.
            pollers_pending.discard(e.record_id)
        elif e.type is EventType.JOIN and e.record_id is not None:
            own_phase = current_phase is not None and _OWN_STOP_PHASE.get(current_phase) is e.kind
            if not interrupted and not own_phase:
                early_joins.append(e)
            if e.attrs.get("outcome") == JoinOutcome.JOINED.value:
                joined.add(e.record_id)
            else:
                out.append(violation("join-timeout", e.seq, [e.record_id]))
        elif e.type is EventType.DB_CLOSE:
            alive = sorted(
                i for i in (alive_at_begin | spawned_during) - exited if i in runtime_ids
            )
            if alive:
                db = e.attrs.get("database", "?")
                out.append(
                    violation("db-closed-while-thread-alive", e.seq, alive, f"Database: {db}.")
                )
            not_joined = sorted((alive_at_begin | spawned_during) - joined - set(alive))
            if not_joined:
                out.append(violation("thread-not-joined-before-db-close", e.seq, not_joined))

    if internal_set_before_poller:
        first = internal_set_before_poller[0]
        ids = [e.record_id for e in internal_set_before_poller if e.record_id is not None]
        out.append(violation("pollers-not-signalled-first", first.seq, ids))

    if early_joins:
        ids = [e.record_id for e in early_joins if e.record_id is not None]
        out.append(violation("join-before-db-interrupt", early_joins[0].seq, ids))

    if unset_stops:
        out.append(
            Violation(
                rule="stop-event-never-set",
                phase=None,
                message=RULES["stop-event-never-set"] + " " + ", ".join(sorted(unset_stops)),
            )
        )

    ran = [str(e.attrs.get("phase")) for e in events if e.type is EventType.PHASE_START]
    if ran != list(timeline.planned_phases):
        out.append(
            Violation(
                rule="phases-out-of-order",
                phase=None,
                message=RULES["phases-out-of-order"]
                + f" Planned {list(timeline.planned_phases)}, ran {ran}.",
            )
        )
    # A DB close with a dead set is also reported as not-joined; keep one record per thread.
    return _dedupe(out)


def _dedupe(violations: list[Violation]) -> list[Violation]:
    seen: set[tuple[str, tuple[int, ...], str | None]] = set()
    out = []
    for v in violations:
        key = (v.rule, v.thread_ids, v.phase)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out
