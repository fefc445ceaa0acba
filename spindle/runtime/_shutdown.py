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
    from ._dbos import DBOS

logger = logging.getLogger("spindle")

#: Internal threads with a phase of their own are not signalled in phase 2.
_OWN_PHASE = frozenset(
    {ThreadKind.EVENT_LOOP, ThreadKind.ADMIN_SERVER, ThreadKind.NOTIFICATION_LISTENER}
)

Phase = Callable[["DBOS", float], None]


def _signal_pollers(rt: DBOS, _timeout: float) -> None:
    rt._supervisor.signal(ThreadGroup.POLLER)
    if rt._config.diagnostics_fault == "spawn_after_shutdown":
        # Fault injection: a thread made after shutdown began; the rule must flag it.
        rt._supervisor.spawn(ThreadKind.POLLER, "dbos-late-spawn", lambda stop: None)


def _signal_internal(rt: DBOS, _timeout: float) -> None:
    rt._supervisor.signal(ThreadGroup.INTERNAL, exclude=_OWN_PHASE)


def _wait_workflows(rt: DBOS, timeout: float) -> None:
    if timeout > 0:
        # Event-driven: ActiveWorkflows sets `idle` when its last workflow is released.
        rt._active.idle.wait(timeout)
    # From here on every workflow stops at its next durable boundary and stays PENDING.
    rt._interrupting = True
    rt._active.interrupt_all()


def _stop_event_loop(rt: DBOS, _timeout: float) -> None:
    rt._supervisor.signal(kinds=frozenset({ThreadKind.EVENT_LOOP}))


def _stop_admin_server(rt: DBOS, _timeout: float) -> None:
    rt._supervisor.signal(kinds=frozenset({ThreadKind.ADMIN_SERVER}))


def _stop_notification_listener(rt: DBOS, _timeout: float) -> None:
    rt._supervisor.signal(kinds=frozenset({ThreadKind.NOTIFICATION_LISTENER}))


def _shutdown_executor(rt: DBOS, _timeout: float) -> None:
    # Queued workflows never start (they stay PENDING for recovery); running ones stop at
    # their next boundary. Waiting here would block on user code; phase 9 joins instead.
    rt._executor.shutdown(wait=False, cancel_futures=True)


def _interrupt_db(rt: DBOS, _timeout: float) -> None:
    # The listener's dedicated connection is not in the pool: close it so a wait blocked on
    # it (had phase 6's stop event not been enough) ends now.
    rt._listener._cleanup_connections()
    count = rt._sysdb.interrupt()
    rt._registry.emit(EventType.DB_INTERRUPT, None, database="system", interrupted=count)


def _join_threads(rt: DBOS, timeout: float) -> None:
    join_timeout = rt._config.thread_join_timeout_sec
    for s in rt._supervisor.threads():
        if s.record.join_outcome is None:
            rt._supervisor.reap(s, join_timeout)
    for thread, record in rt._executor.worker_records():
        if record.join_outcome is None:
            join_and_record(rt._registry, thread, record, join_timeout)


def _close_databases(rt: DBOS, _timeout: float) -> None:
    alive = [r.name for r in rt._registry.live_records() if r.kind is not ThreadKind.FOREIGN]
    rt._registry.emit(EventType.DB_CLOSE, None, database="system", alive_threads=alive)
    remaining = rt._sysdb.close(rt._config.thread_join_timeout_sec)
    if remaining:
        logger.warning("spindle: %d system database operations were still in flight", remaining)
    if rt._appdb is not None:
        rt._registry.emit(EventType.DB_CLOSE, None, database="application", alive_threads=alive)
        rt._appdb.close()


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


def plan(rt: DBOS) -> list[str]:
    """The phase order this shutdown runs (the design's, unless a fault is injected)."""
    order = list(SHUTDOWN_PHASES)
    if rt._config.diagnostics_fault == "close_db_before_join":
        # Fault injection: the pre-PR-553 order, databases closed before threads are joined.
        i, j = order.index("join_threads"), order.index("close_databases")
        order[i], order[j] = order[j], order[i]
    return order


def run_shutdown(rt: DBOS, workflow_completion_timeout_sec: float) -> ShutdownTimeline:
    """Run every phase in order, record it, and return the judged timeline.

    A phase that raises is recorded as failed and logged; the next phases still run, so one
    broken part never leaves the others' threads or databases open.
    """
    recorder = ShutdownRecorder(rt._registry, service=rt._config.name)
    recorder.begin()
    for name in plan(rt):
        try:
            with recorder.phase(name):
                PHASES[name](rt, workflow_completion_timeout_sec)
        except Exception:
            logger.exception("spindle: shutdown phase %s failed", name)
    timeline = recorder.finish()
    release = rt._fault_release
    if release is not None:
        release.set()
    return timeline


def ignoring_thread_body(release: threading.Event) -> Callable[[object], None]:
    """Fault injection: a thread body that ignores its stop event until ``release`` is set."""

    def body(_stop: object) -> None:
        release.wait()

    return body
