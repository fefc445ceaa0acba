"""The ordered shutdown: an action bound to each spec of ``spindle.diagnostics._phases``.

The specs (names, order, flags) live in diagnostics so the rules, the dashboard and the
tests read the same list; this module only says what each step does to a running runtime.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from spindle.diagnostics import (
    EventType,
    ShutdownRecorder,
    ShutdownTimeline,
    ThreadGroup,
    ThreadKind,
)
from spindle.diagnostics import _phases as specs
from spindle.diagnostics._phases import PhaseSpec

from ._supervisor import join_and_record

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

Phase = Callable[["Runtime", float], None]
Step = Callable[["Runtime"], None]


# -- before phase 1 (run under DBOS's state lock, so a concurrent destroy() waits) ----------


def _close_poller_gate(rt: Runtime) -> None:
    if rt.pollers is not None:
        # From here no poller starts a workflow or spawns a thread, and one already
        # starting has finished (the gate waits for it).
        rt.pollers.close(rt.config.thread_join_timeout_sec)


def _mark_stopping(rt: Runtime) -> None:
    # After the gate: a poller start still in flight must not find the runtime destroyed.
    rt.destroyed = True
    rt.stopping.set()


def _close_queues(rt: Runtime) -> None:
    # The queue manager spawns no worker once the phases run.
    rt.queues.close()


PREPARE: dict[PhaseSpec, Step] = specs.bind(
    specs.PREPARE_STEPS,
    {
        specs.CLOSE_POLLER_GATE: _close_poller_gate,
        specs.MARK_STOPPING: _mark_stopping,
        specs.CLOSE_QUEUES: _close_queues,
    },
)


# -- the phases -------------------------------------------------------------------------


def _signal_pollers(rt: Runtime, _timeout: float) -> None:
    rt.supervisor.signal(ThreadGroup.POLLER)
    if rt.config.diagnostics_fault == "spawn_after_shutdown":
        # Fault injection: a thread made after shutdown began; the rule must flag it.
        rt.supervisor.spawn(ThreadKind.POLLER, "dbos-late-spawn", lambda stop: None)


def _signal_internal(rt: Runtime, _timeout: float) -> None:
    # Threads with a phase of their own (event loop, admin server, listener) wait for it.
    rt.supervisor.signal(ThreadGroup.INTERNAL, exclude=specs.OWN_PHASE_KINDS)


def _wait_workflows(rt: Runtime, timeout: float) -> None:
    if timeout > 0:
        # Event-driven: ActiveWorkflows sets `idle` when its last workflow is released.
        rt.active.idle.wait(timeout)
    # From here on every workflow stops at its next durable boundary and stays PENDING.
    rt.interrupting = True
    rt.active.interrupt_all()


def _signal_own_kinds(spec: PhaseSpec) -> Phase:
    """The action of a phase that stops its own thread kinds: signal exactly those."""

    def signal(rt: Runtime, _timeout: float) -> None:
        rt.supervisor.signal(kinds=spec.own_kinds)

    return signal


def _stop_and_join_own_kinds(spec: PhaseSpec) -> Phase:
    """The action of a phase that stops its own thread kinds and joins them before going on.

    stop_conductor: after the drain, so the conductor saw the last workflows end; joined
    there, so the timeline it sends a watching conductor ends at that phase while the
    executor and the databases it reads are still up. stop_dashboard: after join_threads, so
    a hung join can be watched; joined before the databases close.
    """

    def stop(rt: Runtime, _timeout: float) -> None:
        rt.supervisor.signal(kinds=spec.own_kinds)
        for s in rt.supervisor.threads():
            if s.record.kind in spec.own_kinds and s.record.join_outcome is None:
                rt.supervisor.reap(s, rt.config.thread_join_timeout_sec)

    return stop


def _stop_admin_server(rt: Runtime, _timeout: float) -> None:
    if rt.admin is None:
        return
    # DBOS's management routes stop here, as DBOS orders; the dashboard keeps serving until
    # stop_dashboard, so a hung join below can be watched. Without a dashboard there is
    # nothing to watch: the server stops now (it is joined in stop_dashboard).
    rt.admin.close_management()
    if not rt.admin.serves_dashboard:
        rt.supervisor.signal(kinds=frozenset({ThreadKind.ADMIN_SERVER}))


def _shutdown_executor(rt: Runtime, _timeout: float) -> None:
    # Queued workflows never start (they stay PENDING for recovery); running ones stop at
    # their next boundary. Waiting here would block on user code; phase 9 joins instead.
    rt.executor.shutdown(wait=False, cancel_futures=True)


def _interrupt_db(rt: Runtime, _timeout: float) -> None:
    # The listener's dedicated connection is not in the pool: close it so a wait blocked on
    # it (had phase 6's stop event not been enough) ends now.
    rt.listener.interrupt()
    count = rt.sysdb.interrupt()
    rt.registry.emit(EventType.DB_INTERRUPT, None, database="system", interrupted=count)


def _join_threads(rt: Runtime, timeout: float) -> None:
    join_timeout = rt.config.thread_join_timeout_sec
    order = plan(rt)
    # Threads a later phase stops itself (the admin server, serving the dashboard through
    # these joins) are joined there.
    later = frozenset().union(*(s.own_kinds for s in order[order.index(specs.JOIN_THREADS) + 1 :]))
    for s in rt.supervisor.threads():
        if s.record.join_outcome is None and s.record.kind not in later:
            rt.supervisor.reap(s, join_timeout)
    joined = set()
    for thread, record in rt.executor.worker_records():
        joined.add(thread)
        if record.join_outcome is None:
            join_and_record(rt.registry, thread, record, join_timeout)
    # A worker the pool started just before shutdown may still be in its initializer,
    # registering, so not in the list above; left alone it was alive when the databases
    # closed (a db-closed-while-thread-alive violation, one full run in three). With the
    # pool shut down it exits once registered: wait for it, then record it as the others.
    late = [t for t in rt.executor.pool_threads() if t not in joined]
    for thread in late:
        thread.join(join_timeout)
    if late:
        for thread, record in rt.executor.worker_records():
            if thread not in joined and record.join_outcome is None:
                join_and_record(rt.registry, thread, record, join_timeout)


def _close_databases(rt: Runtime, _timeout: float) -> None:
    alive = [r.name for r in rt.registry.live_records() if r.kind is not ThreadKind.FOREIGN]
    rt.registry.emit(EventType.DB_CLOSE, None, database="system", alive_threads=alive)
    remaining = rt.sysdb.close(rt.config.thread_join_timeout_sec)
    if remaining:
        logger.warning("spindle: %d system database operations were still in flight", remaining)
    if rt.appdb is not None:
        rt.registry.emit(EventType.DB_CLOSE, None, database="application", alive_threads=alive)
        rt.appdb.close()


PHASES: dict[PhaseSpec, Phase] = specs.bind(
    specs.PHASE_SPECS,
    {
        specs.SIGNAL_POLLERS: _signal_pollers,
        specs.SIGNAL_INTERNAL: _signal_internal,
        specs.WAIT_WORKFLOWS: _wait_workflows,
        specs.STOP_CONDUCTOR: _stop_and_join_own_kinds(specs.STOP_CONDUCTOR),
        specs.STOP_EVENT_LOOP: _signal_own_kinds(specs.STOP_EVENT_LOOP),
        specs.STOP_ADMIN_SERVER: _stop_admin_server,
        specs.STOP_NOTIFICATION_LISTENER: _signal_own_kinds(specs.STOP_NOTIFICATION_LISTENER),
        specs.SHUTDOWN_EXECUTOR: _shutdown_executor,
        specs.INTERRUPT_DB: _interrupt_db,
        specs.JOIN_THREADS: _join_threads,
        specs.STOP_DASHBOARD: _stop_and_join_own_kinds(specs.STOP_DASHBOARD),
        specs.CLOSE_DATABASES: _close_databases,
    },
)


def plan(rt: Runtime) -> list[PhaseSpec]:
    """The phase order this shutdown runs (the design's, unless a fault is injected)."""
    order = list(specs.PHASE_SPECS)
    if rt.config.diagnostics_fault == "close_db_before_join":
        # Fault injection: the pre-PR-553 order, databases closed before threads are joined.
        i, j = order.index(specs.JOIN_THREADS), order.index(specs.CLOSE_DATABASES)
        order[i], order[j] = order[j], order[i]
    return order


def prepare(rt: Runtime) -> ShutdownRecorder:
    """Begin recording and take the steps before phase 1; returns the recorder to go on with.

    Called under DBOS's state lock. A step that raises is recorded and logged; the next
    steps still run, so one broken part never keeps the others from stopping.
    """
    recorder = ShutdownRecorder(rt.registry, service=rt.config.name)
    recorder.begin()
    rt.shutdown_timeline = recorder.timeline
    if rt.diag is not None:
        # From here the dashboard shows this shutdown live, phase by phase.
        rt.diag.recording(recorder)
    for spec, step in PREPARE.items():
        try:
            with recorder.prepare(spec.name):
                step(rt)
        except Exception:
            logger.exception("spindle: shutdown step %s failed", spec.name)
    return recorder


def run_shutdown(
    rt: Runtime, recorder: ShutdownRecorder, workflow_completion_timeout_sec: float
) -> ShutdownTimeline:
    """Run every phase in order, record it, and return the judged timeline.

    A phase that raises is recorded as failed and logged; the next phases still run, so one
    broken part never leaves the others' threads or databases open.
    """
    for spec in plan(rt):
        try:
            with recorder.phase(spec.name):
                PHASES[spec](rt, workflow_completion_timeout_sec)
        except Exception:
            logger.exception("spindle: shutdown phase %s failed", spec.name)
    timeline = recorder.finish()
    release = rt.fault_release
    if release is not None:
        release.set()
    return timeline


def ignoring_thread_body(release: threading.Event) -> Callable[[object], None]:
    """Fault injection: a thread body that ignores its stop event until ``release`` is set."""

    def body(_stop: object) -> None:
        release.wait()

    return body
