"""The ordered shutdown as data: one spec per phase, and per step taken before phase 1.

Everything that knows about shutdown phases reads this list: the runtime binds one action
to each spec (``spindle/runtime/_shutdown.py``), the ordering rules read the flags, the
dashboard shows what each phase stops, and the tests build their shutdowns from it. To add
a phase, add a spec here (in its place in ``PHASE_SPECS``) and its action in the runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ._kinds import ThreadKind


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """One step of ``destroy()``: its name, what it stops, and the flags the rules read."""

    name: str
    #: What the step stops, in words (shown by the dashboard).
    stops: str
    #: Thread kinds this phase stops itself: phase 2 leaves them to it, and a join of one of
    #: them inside this phase is not "joined before blocking DB calls were interrupted".
    own_kinds: frozenset[ThreadKind] = frozenset()
    #: Once this phase has ended, blocking database calls have been interrupted.
    interrupts_db: bool = False
    #: Once this phase has ended the executor takes no work: its pool may no longer grow.
    stops_executor: bool = False


SIGNAL_POLLERS = PhaseSpec("signal_pollers", "event receivers and pollers (set their stop events)")
SIGNAL_INTERNAL = PhaseSpec(
    "signal_internal", "internal threads, except those a later phase stops itself"
)
WAIT_WORKFLOWS = PhaseSpec(
    "wait_workflows", "active workflows (waited for, then interrupted at their next boundary)"
)
STOP_CONDUCTOR = PhaseSpec(
    "stop_conductor",
    "the conductor connection (after the drain, so a conductor sees the last workflows end)",
    own_kinds=frozenset({ThreadKind.CONDUCTOR}),
)
STOP_EVENT_LOOP = PhaseSpec(
    "stop_event_loop",
    "the background asyncio event loop",
    own_kinds=frozenset({ThreadKind.EVENT_LOOP}),
)
STOP_ADMIN_SERVER = PhaseSpec(
    "stop_admin_server",
    "the DBOS management routes of the admin server (they answer 503 from here on); the "
    "dashboard keeps serving so a hung shutdown can be watched",
)
STOP_NOTIFICATION_LISTENER = PhaseSpec(
    "stop_notification_listener",
    "the notification listener",
    own_kinds=frozenset({ThreadKind.NOTIFICATION_LISTENER}),
)
SHUTDOWN_EXECUTOR = PhaseSpec(
    "shutdown_executor", "the executor (queued work cancelled, no wait)", stops_executor=True
)
INTERRUPT_DB = PhaseSpec(
    "interrupt_db", "blocking database calls and background DB work", interrupts_db=True
)
JOIN_THREADS = PhaseSpec("join_threads", "every thread (joined, with a timeout each)")
STOP_DASHBOARD = PhaseSpec(
    "stop_dashboard",
    "the admin server itself, with the dashboard and its JSON API (its thread joined here)",
    own_kinds=frozenset({ThreadKind.ADMIN_SERVER}),
)
CLOSE_DATABASES = PhaseSpec("close_databases", "the system and application databases")

#: The twelve phases of ``destroy()``, in the order the design requires.
PHASE_SPECS: tuple[PhaseSpec, ...] = (
    SIGNAL_POLLERS,
    SIGNAL_INTERNAL,
    WAIT_WORKFLOWS,
    STOP_CONDUCTOR,
    STOP_EVENT_LOOP,
    STOP_ADMIN_SERVER,
    STOP_NOTIFICATION_LISTENER,
    SHUTDOWN_EXECUTOR,
    INTERRUPT_DB,
    JOIN_THREADS,
    STOP_DASHBOARD,
    CLOSE_DATABASES,
)

#: Their names, the ``planned_phases`` of a timeline.
SHUTDOWN_PHASES: tuple[str, ...] = tuple(s.name for s in PHASE_SPECS)

#: Each phase by name (the rules and the dashboard look phases up by recorded name).
PHASES_BY_NAME: Mapping[str, PhaseSpec] = {s.name: s for s in PHASE_SPECS}

#: Every thread kind some phase stops itself.
OWN_PHASE_KINDS: frozenset[ThreadKind] = frozenset().union(*(s.own_kinds for s in PHASE_SPECS))

# The steps before phase 1, recorded as ``shutdown.prepare.*`` events (not phases, so the
# report's ``phases`` stay the twelve above). They stop whatever could start work or spawn a
# thread once the phases run.
CLOSE_POLLER_GATE = PhaseSpec(
    "close_poller_gate", "pollers starting workflows (one already starting is waited for)"
)
MARK_STOPPING = PhaseSpec("mark_stopping", "new API calls, result polls and retry back-offs")
CLOSE_QUEUES = PhaseSpec("close_queues", "the queue manager spawning workers")

#: The steps before phase 1, in order.
PREPARE_STEPS: tuple[PhaseSpec, ...] = (CLOSE_POLLER_GATE, MARK_STOPPING, CLOSE_QUEUES)

A = TypeVar("A")


def bind(specs: Sequence[PhaseSpec], actions: Mapping[PhaseSpec, A]) -> dict[PhaseSpec, A]:
    """``actions`` in the order of ``specs``; raises when one is missing or extra.

    Called at import time by whoever binds actions, so a phase added here without its
    action (or an action left behind for a removed phase) fails at once, not at shutdown.
    """
    missing = [s.name for s in specs if s not in actions]
    extra = [s.name for s in actions if s not in specs]
    if missing or extra:
        raise TypeError(
            f"shutdown actions do not match the specs: missing {missing}, extra {extra}"
        )
    return {s: actions[s] for s in specs}
