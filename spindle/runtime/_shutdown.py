"""The ordered shutdown: ten phases from one explicit list, recorded as a timeline."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from spindle.diagnostics import (
    SHUTDOWN_PHASES,
    EventType,
    ShutdownRecorder,
    ShutdownTimeline,
    ThreadGroup,
    ThreadKind,
)

from ._supervisor import join_and_record

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

#: Internal threads with a phase of their own are not signalled in phase 2.
_OWN_PHASE = frozenset(
    {ThreadKind.EVENT_LOOP, ThreadKind.ADMIN_SERVER, ThreadKind.NOTIFICATION_LISTENER}
)

Phase = Callable[["Runtime", float], None]


def _signal_pollers(rt: Runtime, _timeout: float) -> None:
    rt.supervisor.signal(ThreadGroup.POLLER)
    if rt.config.diagnostics_fault == "spawn_after_shutdown":
        # Fault injection: a thread made after shutdown began; the rule must flag it.
        rt.supervisor.spawn(ThreadKind.POLLER, "dbos-late-spawn", lambda stop: None)


def _signal_internal(rt: Runtime, _timeout: float) -> None:
    rt.supervisor.signal(ThreadGroup.INTERNAL, exclude=_OWN_PHASE)


def _wait_workflows(rt: Runtime, timeout: float) -> None:
    if timeout > 0:
        # Event-driven: ActiveWorkflows sets `idle` when its last workflow is released.
        rt.active.idle.wait(timeout)
    # From here on every workflow stops at its next durable boundary and stays PENDING.
    rt.interrupting = True
    rt.active.interrupt_all()


def _stop_event_loop(rt: Runtime, _timeout: float) -> None:
    rt.supervisor.signal(kinds=frozenset({ThreadKind.EVENT_LOOP}))


def _stop_admin_server(rt: Runtime, _timeout: float) -> None:
    rt.supervisor.signal(kinds=frozenset({ThreadKind.ADMIN_SERVER}))


def _stop_notification_listener(rt: Runtime, _timeout: float) -> None:
    rt.supervisor.signal(kinds=frozenset({ThreadKind.NOTIFICATION_LISTENER}))


def _shutdown_executor(rt: Runtime, _timeout: float) -> None:
    # Queued workflows never start (they stay PENDING for recovery); running ones stop at
    # their next boundary. Waiting here would block on user code; phase 9 joins instead.
    rt.executor.shutdown(wait=False, cancel_futures=True)


def _interrupt_db(rt: Runtime, _timeout: float) -> None:
    # The listener's dedicated connection is not in the pool: close it so a wait blocked on
    # it (had phase 6's stop event not been enough) ends now.
    rt.listener._cleanup_connections()
    count = rt.sysdb.interrupt()
    rt.registry.emit(EventType.DB_INTERRUPT, None, database="system", interrupted=count)


def _join_threads(rt: Runtime, timeout: float) -> None:
    join_timeout = rt.config.thread_join_timeout_sec
    for s in rt.supervisor.threads():
        if s.record.join_outcome is None:
            rt.supervisor.reap(s, join_timeout)
    for thread, record in rt.executor.worker_records():
        if record.join_outcome is None:
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


PHASES: dict[str, Phase] = {
    "signal_pollers": _signal_pollers,
    "signal_internal": _signal_internal,
    "wait_workflows": _wait_workflows,
    "stop_event_loop": _stop_event_loop,
    "stop_admin_server": _stop_admin_server,
    "stop_notification_listener": _stop_notification_listener,
    "shutdown_executor": _shutdown_executor,
    "interrupt_db": _interrupt_db,
    "join_threads": _join_threads,
    "close_databases": _close_databases,
}
assert tuple(PHASES) == SHUTDOWN_PHASES


def plan(rt: Runtime) -> list[str]:
    """The phase order this shutdown runs (the design's, unless a fault is injected)."""
    order = list(SHUTDOWN_PHASES)
    if rt.config.diagnostics_fault == "close_db_before_join":
        # Fault injection: the pre-PR-553 order, databases closed before threads are joined.
        i, j = order.index("join_threads"), order.index("close_databases")
        order[i], order[j] = order[j], order[i]
    return order


def run_shutdown(rt: Runtime, workflow_completion_timeout_sec: float) -> ShutdownTimeline:
    """Run every phase in order, record it, and return the judged timeline.

    A phase that raises is recorded as failed and logged; the next phases still run, so one
    broken part never leaves the others' threads or databases open.
    """
    recorder = ShutdownRecorder(rt.registry, service=rt.config.name)
    recorder.begin()
    for name in plan(rt):
        try:
            with recorder.phase(name):
                PHASES[name](rt, workflow_completion_timeout_sec)
        except Exception:
            logger.exception("spindle: shutdown phase %s failed", name)
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
