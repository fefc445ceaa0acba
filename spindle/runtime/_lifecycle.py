"""The composition root: ``launch`` builds a Runtime's parts, ``destroy`` takes them apart.

The one module that knows every part, and the one place the runtime imports ``spindle.web``
(to serve the dashboard on its admin server). Everything else receives the ``Runtime``.
"""

from __future__ import annotations

import atexit
import logging
import threading

from spindle.diagnostics import DiagnosticsSession, ThreadGroup, ThreadKind

from . import _current, _shutdown
from ._active import ActiveWorkflows
from ._admin import AdminServer
from ._appdb import ApplicationDatabase
from ._conductor import ConductorClient
from ._config import DEFAULT_CONDUCTOR_URL
from ._event_loop import BackgroundLoop
from ._executor import DBOSExecutor
from ._messaging_db import MessagingDatabase
from ._metrics_otlp import start_otlp_metrics
from ._notifications import make_listener
from ._poller_set import PollerSet
from ._queue_db import requeue_pending
from ._queue_manager import QueueManager
from ._runtime import Runtime
from ._supervisor import Supervisor
from ._sysdb import SystemDatabase
from ._timeouts import TimeoutEnforcer
from ._workflows import on_deadline, recover_pending

logger = logging.getLogger("spindle")

_atexit_registered = False


def _atexit_destroy() -> None:
    rt = _current.peek()
    if rt is not None:
        destroy(rt, 0.0)


def _register_exit_hooks() -> None:
    global _atexit_registered
    if _atexit_registered:
        return
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
        )
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
    recover_pending(rt, [cfg.executor_id])
    # After recovery: a row a worker just dequeued is PENDING here and must not be
    # mistaken for one to recover.
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


def destroy(rt: Runtime, workflow_completion_timeout_sec: float) -> None:
    """The ordered shutdown (idempotent, from any thread, also from ``atexit``)."""
    with rt.state_lock:
        if not rt.launched or rt.destroyed:
            return
        # The steps before phase 1 (poller gate, destroyed/stopping, queues), recorded.
        recorder = _shutdown.prepare(rt)
    timeline = _shutdown.run_shutdown(rt, recorder, workflow_completion_timeout_sec)
    rt.last_timeline = timeline
    if rt.diag is not None:
        rt.diag.record_timeline(timeline)
        # Last of all, so no span of the shutdown itself is lost.
        rt.diag.shutdown()
