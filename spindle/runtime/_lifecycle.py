"""The composition root: ``launch`` builds a Runtime's parts, ``destroy`` takes them apart.

The one module that knows every part, and the one place the runtime imports ``spindle.web``
(to serve the dashboard on its admin server). Everything else receives the ``Runtime``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from spindle.diagnostics import DiagnosticsSession, ThreadGroup, ThreadKind

from . import _current, _shutdown
from ._active import ActiveWorkflows
from ._admin import AdminServer
from ._appdb import ApplicationDatabase
from ._conductor import ConductorClient
from ._config import DEFAULT_CONDUCTOR_URL
from ._context import current_workflow
from ._errors import DBOSDestroyInWorkflowError
from ._event_loop import BackgroundLoop
from ._executor import DBOSExecutor
from ._messaging_db import MessagingDatabase
from ._metrics_otlp import start_otlp_metrics
from ._notifications import make_listener
from ._poller_set import PollerSet
from ._queue_db import requeue_pending
from ._queue_manager import QueueManager
from ._recovery import recover_in_background
from ._runtime import Runtime
from ._serialization import Codecs
from ._signals import install_sigterm_handler
from ._supervisor import Supervisor
from ._sysdb import SystemDatabase
from ._timeouts import TimeoutEnforcer
from ._workflows import on_deadline

logger = logging.getLogger("spindle")

#: Extra system-database connections beyond one per executor worker: the runtime's own
#: threads (queue workers, listener, pollers) and the application's client threads.
POOL_HEADROOM = 16

_atexit_registered = False
#: The runtime whose destroy() returned last, and when (monotonic): atexit measures from it.
_last_destroy: tuple[Runtime, float] | None = None


def _atexit_destroy() -> None:
    rt = _current.peek()
    if rt is not None:
        destroy(rt, 0.0)


def _atexit_record_exit() -> None:
    """At the very end of the interpreter (after every join of its exit): how long after
    destroy() returned the process exits, on the timeline, in the log and in the report."""
    last = _last_destroy
    if last is None:
        return
    rt, returned = last
    timeline = rt.last_timeline
    elapsed = time.monotonic() - returned
    if timeline is None:
        return
    timeline.exit_after_destroy_sec = elapsed
    # The join phase recorded each thread that outlived its join as a violation.
    leaked = sorted(
        {name for v in timeline.violations if v.rule == "join-timeout" for name in v.thread_names}
    )
    if leaked:
        logger.warning(
            "spindle: process exits %.3f s after destroy() returned, leaving leaked threads: %s",
            elapsed,
            ", ".join(leaked),
        )
    report = rt.config.shutdown_report_path
    # Only a report still there: a test's temporary folder may be gone by now.
    if rt.diag is not None and report and os.path.exists(report):
        rt.diag.rewrite_report(timeline)


def _register_exit_hooks() -> None:
    global _atexit_registered
    if _atexit_registered:
        return
    # atexit runs its handlers newest first: the exit time is recorded after the destroy.
    atexit.register(_atexit_record_exit)
    atexit.register(_atexit_destroy)
    # Interpreter exit joins executor workers (threading._shutdown) *before* atexit
    # handlers run, so a worker in a durable sleep would hold the exit for the whole sleep.
    # Threading's own exit hooks run newest first: ours, registered after
    # concurrent.futures', interrupts the workflows before that join.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_atexit_destroy)
        except RuntimeError:
            pass  # the interpreter is already shutting down
    _atexit_registered = True


def launch(rt: Runtime) -> None:
    """Open the databases, start the background threads and recover pending workflows."""
    with rt.state_lock:
        if rt.launched and not rt.destroyed:
            return
        cfg = rt.config
        rt.launched = False
        rt.destroyed = False
        rt.interrupting = False
        rt.stopping = threading.Event()
        # Entries of the previous run (interrupted, or never started by the executor)
        # belong to it; a fresh table lets recovery start those workflows again.
        rt.active = ActiveWorkflows()
        rt.supervisor = Supervisor(rt.registry)
        rt.sysdb = SystemDatabase(
            cfg.system_database_url,
            pool_size=cfg.sys_db_pool_size,
            sqlite_synchronous=cfg.sqlite_synchronous,
            # One connection per executor worker and some, so workers do not starve for
            # connections (the pool opens them on demand; a pool timeout is retried).
            max_connections=cfg.max_executor_threads + POOL_HEADROOM,
            client_retries=cfg.sys_db_client_retries,
            codecs=Codecs(cfg.dbos_settings.get("serializer")),
        )
        # A workflow's database calls retry until the database answers, never giving up.
        rt.sysdb.retrier.in_workflow = lambda: current_workflow.get() is not None
        rt.sysdb.migrate()
        if cfg.application_database_url:
            rt.appdb = ApplicationDatabase(
                cfg.application_database_url,
                pool_size=cfg.sys_db_pool_size,
                sqlite_synchronous=cfg.sqlite_synchronous,
            )
            rt.appdb.migrate()
        rt.diag = DiagnosticsSession(
            rt.registry,
            service_name=cfg.name,
            enabled=cfg.enable_diagnostics,
            otlp_traces_endpoints=cfg.otlp_traces_endpoints,
            report_path=cfg.shutdown_report_path,
            stuck_grace_sec=cfg.diagnostics_stuck_grace_sec,
        )
        rt.executor = DBOSExecutor(cfg.max_executor_threads, rt.registry)
        rt.loop = BackgroundLoop(rt.supervisor)
        rt.loop.start()
        rt.timeouts = TimeoutEnforcer(rt.supervisor, lambda wf: on_deadline(rt, wf), rt.clock)
        rt.timeouts.start()
        # Queued workflows this executor was running go back to their queue (and its
        # limits) before anything can dequeue; recovery below restarts only the others.
        requeue_pending(rt.sysdb, [cfg.executor_id], cfg.application_version)
        queues = QueueManager(rt)
        rt.queues = queues
        rt.messaging_db = MessagingDatabase(rt.sysdb)
        rt.listener = make_listener(
            rt.supervisor,
            rt.messaging_db,
            rt.sysdb.url,
            cfg.notification_polling_interval_sec,
        )
        # Before recovery: a recovered workflow may recv at once. Returns once listening.
        rt.listener.start()
        rt.admin = None
        if cfg.run_admin_server:
            _start_admin_server(rt)
        if cfg.enable_diagnostics:
            start_otlp_metrics(rt)  # only when an OTLP metrics endpoint is configured
        if cfg.diagnostics_fault == "ignore_stop_event":
            rt.fault_release = threading.Event()
            rt.supervisor.spawn(
                ThreadKind.POLLER,
                "dbos-fault-ignores-stop",
                _shutdown.ignoring_thread_body(rt.fault_release),
                group=ThreadGroup.POLLER,
            )
        rt.launched = True
        # Last: pollers start workflows, which needs every other part up.
        pollers = PollerSet(rt)
        rt.pollers = pollers
        pollers.start()
        _start_conductor(rt)
        _register_exit_hooks()
        if cfg.handle_signals:
            _install_signal_handler(rt)
    # The IDs are listed here, the workflows restarted in batches on a supervised thread:
    # launch() returns at once however many there are.
    rt.recovery_done = recover_in_background(rt, [cfg.executor_id])
    # After the IDs were listed: a row a worker just dequeued is PENDING here and must not
    # be mistaken for one to recover.
    queues.start()


def _start_admin_server(rt: Runtime) -> None:
    from ._admin_api import build_admin_app

    cfg = rt.config
    dashboard = None
    if cfg.enable_diagnostics and rt.diag is not None:
        # The one place the runtime reaches into the web layer: it serves the dashboard.
        from spindle.web import create_app

        # No token here: build_admin_app's one auth layer already guards all it serves.
        dashboard = create_app(rt.diag)
    server = AdminServer(
        rt.supervisor,
        build_admin_app(rt, dashboard),
        cfg.admin_host,
        cfg.admin_port,
        serves_dashboard=dashboard is not None,
    )
    if server.start():
        rt.admin = server


def _start_conductor(rt: Runtime) -> None:
    cfg = rt.config
    rt.conductor = None
    if cfg.conductor_key is None:
        if cfg.conductor_url is not None:
            logger.warning("spindle: conductor_url is set but conductor_key is not: not connecting")
        return
    client = ConductorClient(rt, cfg.conductor_url or DEFAULT_CONDUCTOR_URL, cfg.conductor_key)
    rt.conductor = client
    client.start()


def _install_signal_handler(rt: Runtime) -> None:
    install_sigterm_handler(lambda: destroy(rt, 0.0))


def destroy(rt: Runtime, workflow_completion_timeout_sec: float) -> None:
    """The ordered shutdown (idempotent, from any thread, also from ``atexit``).

    Every concurrent caller returns once the one shutdown has finished. Raises
    :class:`DBOSDestroyInWorkflowError` (and does nothing) inside a workflow or a step.
    """
    ctx = current_workflow.get()
    if ctx is not None:
        # A workflow that destroyed its runtime would do it again at every recovery.
        raise DBOSDestroyInWorkflowError(
            f"DBOS.destroy() must not be called from inside a workflow or step"
            f" (workflow {ctx.workflow_id!r}); nothing was shut down"
        )
    with rt.state_lock:
        if not rt.launched:
            return
        done = rt.shutdown_done
        if rt.destroyed:
            # Another caller runs it (or ran it): wait for its end, unless that caller is
            # this very thread (re-entered from code the shutdown itself runs): waiting
            # there would wait for ourselves.
            if done is None or rt.shutdown_thread == threading.get_ident():
                return
        else:
            done = None
            rt.shutdown_done = threading.Event()
            rt.shutdown_thread = threading.get_ident()
            # The steps before phase 1 (poller gate, destroyed/stopping, queues), recorded.
            recorder = _shutdown.prepare(rt)
    if done is not None:
        done.wait()
        return
    try:
        timeline = _shutdown.run_shutdown(rt, recorder, workflow_completion_timeout_sec)
        rt.last_timeline = timeline
        if rt.diag is not None:
            rt.diag.record_timeline(timeline)
            # Last of all, so no span of the shutdown itself is lost.
            rt.diag.shutdown()
    finally:
        global _last_destroy
        _last_destroy = (rt, time.monotonic())
        rt.shutdown_thread = None
        finished = rt.shutdown_done
        if finished is not None:
            finished.set()
