"""The ``DBOS`` class: configuration, decorators, launch, the public calls and destroy."""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy.orm import Session

from spindle.diagnostics import (
    Clock,
    DiagnosticsSession,
    RealClock,
    ShutdownTimeline,
    ThreadGroup,
    ThreadKind,
    ThreadRegistry,
)

from . import _messaging, _shutdown
from ._active import ActiveWorkflow, ActiveWorkflows
from ._admin import AdminServer
from ._appdb import ApplicationDatabase, current_session
from ._config import Config, DBOSConfig, load_config
from ._context import current_workflow
from ._core import (
    durable_sleep,
    durable_sleep_async,
    prepare_workflow,
    run_step,
    run_step_async,
    wait_async,
)
from ._errors import (
    DBOSException,
    DBOSMaxRecoveryAttemptsExceededError,
    DBOSNonExistentWorkflowError,
    DBOSNotLaunchedError,
    DBOSWorkflowFunctionNotFoundError,
)
from ._event_loop import BackgroundLoop
from ._executor import DBOSExecutor
from ._functions import (
    GLOBAL_REGISTRY,
    StepInfo,
    TransactionInfo,
    WorkflowInfo,
    function_name,
    is_async,
)
from ._handles import WorkflowHandle, WorkflowHandleAsync
from ._messaging_db import MessagingDatabase
from ._notifications import NotificationListener, make_listener
from ._pollers import POLLERS, PollerSet, ReceiverPoller, ScheduledPoller
from ._queue import GLOBAL_QUEUES, Queue, QueueRateLimit
from ._queue_db import requeue_pending, requeue_resumed
from ._queue_manager import QueueManager
from ._receivers import EventSource
from ._schedules import (
    PAUSED,
    ScheduleStore,
    WorkflowSchedule,
    encode_context,
    validate_new_schedule,
)
from ._serialization import deserialize
from ._status import WorkflowStatus
from ._supervisor import Supervisor
from ._sysdb import PENDING, SystemDatabase
from ._timeouts import TimeoutEnforcer
from ._transactions import run_transaction, run_transaction_async

if TYPE_CHECKING:
    from ._core import _Start

logger = logging.getLogger("spindle")

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

_instance: DBOS | None = None
_instance_lock = threading.Lock()
_atexit_registered = False


def _get_instance() -> DBOS:
    inst = _instance
    if inst is None:
        raise DBOSNotLaunchedError("DBOS(config=...) was not constructed")
    return inst


def _atexit_destroy() -> None:
    inst = _instance
    if inst is not None:
        inst._destroy(0.0)


class _DBOSMeta(type):
    """Class-level properties, as DBOS Transact exposes them (``DBOS.workflow_id``)."""

    @property
    def workflow_id(cls) -> str | None:
        """The ID of the workflow the caller runs in, or None outside a workflow."""
        ctx = current_workflow.get()
        return ctx.workflow_id if ctx is not None else None

    @property
    def step_id(cls) -> int | None:
        """The function id of the current step (None outside a workflow)."""
        ctx = current_workflow.get()
        return ctx.next_function_id if ctx is not None else None

    @property
    def sql_session(cls) -> Session:
        """The SQLAlchemy session of the running ``@DBOS.transaction``."""
        session = current_session.get()
        if session is None:
            raise DBOSException("DBOS.sql_session is only available inside a transaction")
        return session

    @property
    def thread_registry(cls) -> ThreadRegistry:
        """The live registry of this app's threads."""
        return _get_instance()._registry

    @property
    def diagnostics(cls) -> DiagnosticsSession:
        """This app's diagnostics session (timelines, spans)."""
        rt = _get_instance()
        if rt._diag is None:
            raise DBOSNotLaunchedError("launch() was not called")
        return rt._diag

    @property
    def last_shutdown_timeline(cls) -> ShutdownTimeline | None:
        """The timeline of the latest ``destroy()``."""
        inst = _instance
        return inst._last_timeline if inst is not None else None


class DBOS(metaclass=_DBOSMeta):
    """A durable-workflow runtime, with the API of DBOS Transact for Python."""

    def __init__(self, *, config: DBOSConfig, clock: Clock | None = None) -> None:
        global _instance
        # Validate before anything else: a bad config must leave the current instance alone.
        self._config: Config = load_config(config)
        self._clock: Clock = clock or RealClock()
        self._registry = ThreadRegistry(max_exited=self._config.diagnostics_max_exited_threads)
        self._supervisor = Supervisor(self._registry)
        self._state_lock = threading.RLock()
        self._launched = False
        self._destroyed = False
        self._interrupting = False
        self._stopping = threading.Event()
        self._diag: DiagnosticsSession | None = None
        self._last_timeline: ShutdownTimeline | None = None
        self._fault_release: threading.Event | None = None
        self._appdb: ApplicationDatabase | None = None
        self._active = ActiveWorkflows()
        self._pollers: PollerSet | None = None
        # Tasks of async workflows started on the caller's loop: held so they are not
        # garbage-collected mid-run (asyncio keeps only weak references to tasks).
        self._background_tasks: set[asyncio.Task[Any]] = set()
        logging.getLogger("spindle").setLevel(self._config.log_level)
        with _instance_lock:
            current = _instance
            if current is not None and current._launched and not current._destroyed:
                raise DBOSException(
                    "DBOS is already launched in this process; call DBOS.destroy() first"
                )
            _instance = self

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def launch(cls) -> None:
        """Open the databases, start the background threads and recover pending workflows."""
        _get_instance()._launch()

    def _launch(self) -> None:
        global _atexit_registered
        with self._state_lock:
            if self._launched and not self._destroyed:
                return
            cfg = self._config
            self._launched = False
            self._destroyed = False
            self._interrupting = False
            self._stopping = threading.Event()
            # Entries of the previous run (interrupted, or never started by the executor)
            # belong to it; a fresh table lets recovery start those workflows again.
            self._active = ActiveWorkflows()
            self._supervisor = Supervisor(self._registry)
            self._sysdb = SystemDatabase(
                cfg.system_database_url,
                pool_size=cfg.sys_db_pool_size,
                sqlite_synchronous=cfg.sqlite_synchronous,
            )
            self._sysdb.migrate()
            if cfg.application_database_url:
                self._appdb = ApplicationDatabase(
                    cfg.application_database_url,
                    pool_size=cfg.sys_db_pool_size,
                    sqlite_synchronous=cfg.sqlite_synchronous,
                )
                self._appdb.migrate()
            self._diag = DiagnosticsSession(
                self._registry,
                service_name=cfg.name,
                enabled=cfg.enable_diagnostics,
                otlp_traces_endpoints=cfg.otlp_traces_endpoints,
                report_path=cfg.shutdown_report_path,
                stuck_grace_sec=cfg.diagnostics_stuck_grace_sec,
            )
            self._executor = DBOSExecutor(cfg.max_executor_threads, self._registry)
            self._loop = BackgroundLoop(self._supervisor)
            self._loop.start()
            self._timeouts = TimeoutEnforcer(self._supervisor, self._on_deadline, self._clock)
            self._timeouts.start()
            # Queued workflows this executor was running go back to their queue (and its
            # limits) before anything can dequeue; recovery below restarts only the others.
            requeue_pending(self._sysdb, [cfg.executor_id], cfg.application_version)
            self._queues = QueueManager(self)
            self._messaging_db = MessagingDatabase(self._sysdb)
            self._listener: NotificationListener = make_listener(
                self._supervisor,
                self._messaging_db,
                self._sysdb.url,
                cfg.notification_polling_interval_sec,
            )
            # Before recovery: a recovered workflow may recv at once. Returns once listening.
            self._listener.start()
            self._admin: AdminServer | None = None
            if cfg.run_admin_server:
                self._start_admin_server()
            if cfg.diagnostics_fault == "ignore_stop_event":
                self._fault_release = threading.Event()
                self._supervisor.spawn(
                    ThreadKind.POLLER,
                    "dbos-fault-ignores-stop",
                    _shutdown.ignoring_thread_body(self._fault_release),
                    group=ThreadGroup.POLLER,
                )
            self._launched = True
            # Last: pollers start workflows, which needs every other part up.
            self._pollers = PollerSet(self)
            self._pollers.start()
            if not _atexit_registered:
                atexit.register(_atexit_destroy)
                # Interpreter exit joins executor workers (threading._shutdown) *before*
                # atexit handlers run, so a worker in a durable sleep would hold the exit for
                # the whole sleep. Threading's own exit hooks run newest first: ours, registered
                # after concurrent.futures', interrupts the workflows before that join.
                register = getattr(threading, "_register_atexit", None)
                if register is not None:
                    try:
                        register(_atexit_destroy)
                    except RuntimeError:
                        pass  # the interpreter is already shutting down
                _atexit_registered = True
        self._recover_pending([cfg.executor_id])
        # After recovery: a row a worker just dequeued is PENDING here and must not be
        # mistaken for one to recover.
        self._queues.start()

    def _start_admin_server(self) -> None:
        from ._admin_api import build_admin_app

        cfg = self._config
        dashboard = None
        if cfg.enable_diagnostics and self._diag is not None:
            # The one place the runtime reaches into the web layer: it serves the dashboard.
            from spindle.web import create_app

            dashboard = create_app(self._diag, admin_token=cfg.admin_token)
        server = AdminServer(
            self._supervisor, build_admin_app(self, dashboard), cfg.admin_host, cfg.admin_port
        )
        if server.start():
            self._admin = server

    @property
    def admin_url(self) -> str | None:
        """The admin server's base URL, when it runs."""
        admin = getattr(self, "_admin", None)
        return admin.url if admin is not None else None

    @classmethod
    def admin_url_of_instance(cls) -> str | None:
        """The running app's admin server URL (None when it does not run)."""
        inst = _instance
        return inst.admin_url if inst is not None else None

    def _require_launched(self) -> None:
        if not self._launched or self._destroyed:
            raise DBOSNotLaunchedError("DBOS.launch() was not called (or destroy() ran)")

    @classmethod
    def destroy(
        cls, *, destroy_registry: bool = False, workflow_completion_timeout_sec: float = 0
    ) -> None:
        """The ordered shutdown (idempotent, from any thread, also from ``atexit``)."""
        inst = _instance
        if inst is not None:
            inst._destroy(workflow_completion_timeout_sec)
        if destroy_registry:
            GLOBAL_REGISTRY.workflows.clear()
            GLOBAL_QUEUES.clear()
            POLLERS.clear()

    def _destroy(self, workflow_completion_timeout_sec: float) -> None:
        with self._state_lock:
            if not self._launched or self._destroyed:
                return
            if self._pollers is not None:
                # Before phase 1: from here no poller starts a workflow or spawns a thread,
                # and one already starting has finished (the gate waits for it).
                self._pollers.close(self._config.thread_join_timeout_sec)
            self._destroyed = True
            self._stopping.set()
        # Before phase 1: the queue manager spawns no worker once shutdown began.
        self._queues.close()
        timeline = _shutdown.run_shutdown(self, workflow_completion_timeout_sec)
        self._last_timeline = timeline
        if self._diag is not None:
            self._diag.record_timeline(timeline)
            # Last of all, so no span of the shutdown itself is lost.
            self._diag.shutdown()

    def _on_deadline(self, workflow_id: str) -> None:
        if self._interrupting:
            return
        for wf_id in self._sysdb.cancel_tree(workflow_id):
            self._timeouts.remove(wf_id)
            entry = self._active.get(wf_id)
            if entry is not None:
                entry.cancel()

    # -- recovery ------------------------------------------------------------------------

    def _recover_pending(self, executor_ids: Sequence[str]) -> list[WorkflowHandle[Any]]:
        handles: list[WorkflowHandle[Any]] = []
        version = self._config.application_version
        for wf_id in self._sysdb.pending_workflow_ids(executor_ids, version):
            try:
                handles.append(self._restart(wf_id, count_attempt=True))
            except (DBOSWorkflowFunctionNotFoundError, DBOSMaxRecoveryAttemptsExceededError) as exc:
                logger.warning("spindle: cannot recover %s: %s", wf_id, exc)
        return handles

    def _restart(self, wf_id: str, *, count_attempt: bool) -> WorkflowHandle[Any]:
        row = self._sysdb.get_status(wf_id)
        if row is None:
            raise DBOSNonExistentWorkflowError(wf_id)
        info = GLOBAL_REGISTRY.workflow(row.name)
        if info is None:
            raise DBOSWorkflowFunctionNotFoundError(
                f"workflow {wf_id!r} runs {row.name!r}, which this process has not registered"
            )
        if count_attempt and row.status == PENDING:
            limit = info.max_recovery_attempts
            if limit is not None and row.recovery_attempts >= limit:
                # A workflow that keeps crashing its process stops being retried: a dead
                # letter the operator can inspect and resume.
                self._sysdb.exceed_recovery(wf_id)
                raise DBOSMaxRecoveryAttemptsExceededError(wf_id, limit)
            self._sysdb.claim_for_recovery(wf_id, self._config.executor_id)
        args, kwargs = deserialize(row.inputs)
        start = prepare_workflow(self, info, tuple(args), dict(kwargs), workflow_id=wf_id)
        self._dispatch(info, start)
        return WorkflowHandle(self, wf_id, start.entry)

    def _dispatch(self, info: WorkflowInfo, start: _Start) -> None:
        if start.run is None:
            return
        if info.is_async:
            self._loop.submit(start.run())
        else:
            self._executor.submit(start.entry.run_if_unclaimed)

    # -- decorators ----------------------------------------------------------------------

    @classmethod
    def workflow(
        cls, *, name: str | None = None, max_recovery_attempts: int | None = None
    ) -> Callable[[F], F]:
        """Make a function a durable workflow (sync or ``async def``)."""

        def decorator(func: F) -> F:
            info = WorkflowInfo(
                name or function_name(func), func, is_async(func), max_recovery_attempts
            )
            GLOBAL_REGISTRY.add_workflow(info)
            if info.is_async:

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    rt = _get_instance()
                    start = prepare_workflow(rt, info, args, kwargs)
                    if start.run is not None:
                        return await cast(Callable[[], Coroutine[Any, Any, Any]], start.run)()
                    return await wait_async(start.entry)

                wrapper: Callable[..., Any] = async_wrapper
            else:

                @functools.wraps(func)
                def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                    rt = _get_instance()
                    start = prepare_workflow(rt, info, args, kwargs)
                    # Called directly: run in the caller's thread.
                    if start.run is not None and start.entry.claim():
                        return start.run()
                    return WorkflowHandle[Any](
                        rt, start.entry.workflow_id, start.entry
                    ).get_result()

                wrapper = sync_wrapper
            wrapper.__spindle_workflow__ = info  # type: ignore[attr-defined]
            return cast(F, wrapper)

        return decorator

    @classmethod
    def step(
        cls,
        *,
        name: str | None = None,
        retries_allowed: bool = False,
        interval_seconds: float = 1.0,
        max_attempts: int = 3,
        backoff_rate: float = 2.0,
    ) -> Callable[[F], F]:
        """Make a function a checkpointed step, optionally retried with back-off."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if interval_seconds < 0 or backoff_rate <= 0:
            raise ValueError("interval_seconds must be >= 0 and backoff_rate > 0")

        def decorator(func: F) -> F:
            info = StepInfo(
                name or function_name(func),
                func,
                is_async(func),
                retries_allowed,
                max_attempts,
                interval_seconds,
                backoff_rate,
            )
            if info.is_async:

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    rt = _instance
                    if rt is None or current_workflow.get() is None:
                        return await func(*args, **kwargs)
                    return await run_step_async(rt, info, args, kwargs)

                return cast(F, async_wrapper)

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                rt = _instance
                if rt is None or current_workflow.get() is None:
                    return func(*args, **kwargs)
                return run_step(rt, info, args, kwargs)

            return cast(F, sync_wrapper)

        return decorator

    @classmethod
    def transaction(
        cls, *, isolation_level: str | None = None, name: str | None = None
    ) -> Callable[[F], F]:
        """Run a function in one application-database transaction, exactly once."""

        def decorator(func: F) -> F:
            info = TransactionInfo(
                name or function_name(func), func, is_async(func), isolation_level
            )
            if info.is_async:

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await run_transaction_async(_get_instance(), info, args, kwargs)

                return cast(F, async_wrapper)

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                return run_transaction(_get_instance(), info, args, kwargs)

            return cast(F, sync_wrapper)

        return decorator

    # -- pollers: schedules and event receivers ---------------------------------------------

    @classmethod
    def scheduled(cls, cron: str) -> Callable[[F], F]:
        """Run a workflow ``(scheduled_time, actual_time)`` on a cron schedule (seconds
        first when six fields), once per tick across every process on the database."""

        def decorator(func: F) -> F:
            from ._cron import check_cron

            info = _workflow_info(func)
            check_cron(cron, f"scheduled workflow {info.name!r}")
            POLLERS.add_scheduled(ScheduledPoller(info, cron))
            return func

        return decorator

    @classmethod
    def event_receiver(
        cls, source: EventSource, *, name: str | None = None, poll_timeout_sec: float = 1.0
    ) -> Callable[[F], F]:
        """Start the workflow once per message of ``source`` (with the message's value),
        from a ``dbos-receiver[<name>]`` thread started at launch."""
        if not isinstance(source, EventSource):
            raise TypeError("source must have name, poll(timeout) and commit(events)")
        if poll_timeout_sec <= 0:
            raise ValueError("poll_timeout_sec must be > 0")

        def decorator(func: F) -> F:
            info = _workflow_info(func)
            receiver = ReceiverPoller(name or source.name, info, source, poll_timeout_sec)
            POLLERS.add_receiver(receiver)
            return func

        return decorator

    @classmethod
    def kafka_consumer(cls, config: dict[str, Any], topics: list[str]) -> Callable[[F], F]:
        """Start the workflow once per Kafka message (a ``KafkaMessage``) of ``topics``;
        needs the ``kafka`` extra (confluent-kafka)."""
        from ._kafka import KafkaSource, import_confluent_kafka

        import_confluent_kafka()  # fail at decoration, naming the extra, not at launch

        def decorator(func: F) -> F:
            info = _workflow_info(func)
            source = KafkaSource(config, topics, info.name)
            return cls.event_receiver(source)(func)

        return decorator

    @classmethod
    def create_schedule(
        cls,
        *,
        schedule_name: str,
        workflow_fn: Callable[..., Any],
        schedule: str,
        context: Any = None,
    ) -> None:
        """Store a cron schedule that runs ``workflow_fn(scheduled_time, context)``;
        raises if one with this name exists."""
        rt = _get_instance()
        rt._require_launched()
        info = _workflow_info(workflow_fn)
        validate_new_schedule(schedule_name, info.name, schedule)
        data = encode_context(schedule_name, context)
        if not ScheduleStore(rt._sysdb).create(schedule_name, info.name, schedule, data):
            raise DBOSException(f"schedule {schedule_name!r} already exists")
        rt._schedules_changed()

    @classmethod
    def list_schedules(
        cls,
        *,
        status: str | list[str] | None = None,
        workflow_name: str | list[str] | None = None,
        schedule_name_prefix: str | list[str] | None = None,
    ) -> list[WorkflowSchedule]:
        """The stored schedules, optionally filtered."""
        rt = _get_instance()
        rt._require_launched()
        return ScheduleStore(rt._sysdb).list(
            status=status, workflow_name=workflow_name, schedule_name_prefix=schedule_name_prefix
        )

    @classmethod
    def get_schedule(cls, name: str) -> WorkflowSchedule | None:
        """One schedule by name, or None."""
        rt = _get_instance()
        rt._require_launched()
        return ScheduleStore(rt._sysdb).get(name)

    @classmethod
    def delete_schedule(cls, name: str) -> None:
        """Delete a schedule (no-op if missing); its thread stops within one poll."""
        rt = _get_instance()
        rt._require_launched()
        ScheduleStore(rt._sysdb).delete(name)
        rt._schedules_changed()

    @classmethod
    def pause_schedule(cls, name: str) -> None:
        """Pause a schedule: it does not fire until resumed."""
        cls._set_schedule_status(name, PAUSED)

    @classmethod
    def resume_schedule(cls, name: str) -> None:
        """Resume a paused schedule."""
        cls._set_schedule_status(name, "ACTIVE")

    @classmethod
    def backfill_schedule(
        cls, schedule_name: str, start: datetime, end: datetime
    ) -> list[WorkflowHandle[None]]:
        """Start the ticks of ``[start, end)`` that never ran (ticks are not backfilled on
        their own); ticks already started anywhere are not started again."""
        from ._schedules import backfill

        rt = _get_instance()
        rt._require_launched()
        ids = backfill(rt, schedule_name, start, end)
        return [WorkflowHandle(rt, i, rt._active.get(i)) for i in ids]

    @classmethod
    def trigger_schedule(cls, schedule_name: str) -> WorkflowHandle[None]:
        """Start the schedule's workflow now, outside its cron."""
        from ._schedules import trigger

        rt = _get_instance()
        rt._require_launched()
        workflow_id = trigger(rt, schedule_name)
        return WorkflowHandle(rt, workflow_id, rt._active.get(workflow_id))

    @classmethod
    def _set_schedule_status(cls, name: str, status: str) -> None:
        rt = _get_instance()
        rt._require_launched()
        if not ScheduleStore(rt._sysdb).set_status(name, status):
            raise DBOSException(f"schedule {name!r} does not exist")
        rt._schedules_changed()

    def _schedules_changed(self) -> None:
        if self._pollers is not None:
            self._pollers.schedules_changed()

    # -- queues ------------------------------------------------------------------------------

    @classmethod
    def register_queue(
        cls,
        name: str,
        concurrency: int | None = None,
        limiter: QueueRateLimit | None = None,
        *,
        worker_concurrency: int | None = None,
        priority_enabled: bool = False,
        polling_interval_sec: float = 1.0,
        partition_queue: bool = False,
    ) -> Queue:
        """Declare a queue (as ``Queue(...)``); a launched runtime starts draining it at once."""
        return Queue(
            name,
            concurrency,
            limiter,
            worker_concurrency=worker_concurrency,
            priority_enabled=priority_enabled,
            polling_interval_sec=polling_interval_sec,
            partition_queue=partition_queue,
        )

    @classmethod
    def retrieve_queue(cls, name: str) -> Queue:
        """The queue declared under ``name``."""
        queue = GLOBAL_QUEUES.get(name)
        if queue is None:
            raise DBOSException(f"no queue named {name!r} was declared")
        return queue

    # -- starting and inspecting workflows ------------------------------------------------

    @classmethod
    def start_workflow(cls, func: Callable[..., R], *args: Any, **kwargs: Any) -> WorkflowHandle[R]:
        """Start a workflow in the background; returns its handle at once."""
        rt = _get_instance()
        info = _workflow_info(func)
        start = prepare_workflow(rt, info, args, kwargs)
        rt._dispatch(info, start)
        return WorkflowHandle(rt, start.entry.workflow_id, start.entry)

    @classmethod
    async def start_workflow_async(
        cls, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Start a workflow from async code; async workflows run on the caller's loop."""
        rt = _get_instance()
        info = _workflow_info(func)
        start = prepare_workflow(rt, info, args, kwargs)
        if start.run is not None:
            if info.is_async:
                coro = cast(Callable[[], Coroutine[Any, Any, Any]], start.run)()
                task = asyncio.get_running_loop().create_task(coro)
                rt._background_tasks.add(task)
                task.add_done_callback(rt._background_tasks.discard)
            else:
                rt._executor.submit(start.entry.run_if_unclaimed)
        return WorkflowHandleAsync(rt, start.entry.workflow_id, start.entry)

    @classmethod
    def retrieve_workflow(
        cls, workflow_id: str, existing_workflow: bool = True
    ) -> WorkflowHandle[Any]:
        """A handle to a workflow by ID (raises if it does not exist)."""
        rt = _get_instance()
        rt._require_launched()
        if existing_workflow and rt._sysdb.get_status(workflow_id) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        return WorkflowHandle(rt, workflow_id, rt._active.get(workflow_id))

    @classmethod
    async def retrieve_workflow_async(cls, workflow_id: str) -> WorkflowHandleAsync[Any]:
        """Async :meth:`retrieve_workflow`."""
        rt = _get_instance()
        rt._require_launched()
        if rt._sysdb.get_status(workflow_id) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        return WorkflowHandleAsync(rt, workflow_id, rt._active.get(workflow_id))

    @classmethod
    def get_workflow_status(cls, workflow_id: str) -> WorkflowStatus | None:
        """The status of a workflow, or None."""
        rt = _get_instance()
        rt._require_launched()
        row = rt._sysdb.get_status(workflow_id)
        return WorkflowStatus.from_row(row) if row is not None else None

    @classmethod
    def list_workflows(
        cls,
        *,
        workflow_ids: list[str] | None = None,
        status: str | list[str] | None = None,
        start_time: str | None = None,
        end_time: str | None = None,
        name: str | None = None,
        queue_name: str | list[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        sort_desc: bool = False,
        load_input: bool = True,
        queues_only: bool = False,
    ) -> list[WorkflowStatus]:
        """Workflows matching the filters (times as ISO 8601 strings), oldest first."""
        rt = _get_instance()
        rt._require_launched()
        for key, value in (("limit", limit), ("offset", offset)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
        rows = rt._sysdb.list_workflows(
            workflow_ids=workflow_ids,
            status=status,
            name=name,
            start_time_ms=_iso_ms(start_time, "start_time"),
            end_time_ms=_iso_ms(end_time, "end_time"),
            queue_name=queue_name,
            queues_only=queues_only,
            limit=limit,
            offset=offset,
            sort_desc=sort_desc,
        )
        return [WorkflowStatus.from_row(r, load_input=load_input) for r in rows]

    @classmethod
    def list_queued_workflows(
        cls,
        *,
        queue_name: str | list[str] | None = None,
        status: str | list[str] | None = None,
        start_time: str | None = None,
        end_time: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        sort_desc: bool = False,
        load_input: bool = True,
    ) -> list[WorkflowStatus]:
        """Workflows still in a queue (ENQUEUED or PENDING unless ``status`` is given)."""
        return cls.list_workflows(
            queue_name=queue_name,
            status=status,
            start_time=start_time,
            end_time=end_time,
            name=name,
            limit=limit,
            offset=offset,
            sort_desc=sort_desc,
            load_input=load_input,
            queues_only=True,
        )

    @classmethod
    def cancel_workflow(cls, workflow_id: str) -> None:
        """Cancel a workflow: it stops at its next step; waiters get a cancellation error."""
        rt = _get_instance()
        rt._require_launched()
        if rt._sysdb.get_status(workflow_id) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        rt._sysdb.cancel(workflow_id)
        rt._timeouts.remove(workflow_id)
        entry = rt._active.get(workflow_id)
        if entry is not None:
            entry.cancel()

    @classmethod
    def resume_workflow(cls, workflow_id: str) -> WorkflowHandle[Any]:
        """Resume a cancelled or failed workflow from its last completed step.

        A workflow of a queue goes back to that queue (ENQUEUED) and starts when the
        queue's limits allow; any other restarts here at once.
        """
        rt = _get_instance()
        rt._require_launched()
        active: ActiveWorkflow | None = rt._active.get(workflow_id)
        if active is not None and not active.done.is_set():
            return WorkflowHandle(rt, workflow_id, active)
        if active is not None:
            # A cancelled entry lingers until its body reaches a boundary; wait for it.
            rt._active.release(active)
        queue_name = requeue_resumed(rt._sysdb, workflow_id)
        if queue_name is not None:
            # A queued workflow goes back to its queue, under the queue's limits (as DBOS).
            rt._queues.wake(queue_name)
            return WorkflowHandle(rt, workflow_id, rt._active.get(workflow_id))
        row = rt._sysdb.resume(workflow_id, rt._config.executor_id)
        if row is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        return rt._restart(workflow_id, count_attempt=False)

    @classmethod
    def sleep(cls, seconds: float) -> None:
        """Durable sleep: a recovered workflow sleeps only the time left."""
        rt = _instance
        if rt is None:
            raise DBOSNotLaunchedError("DBOS(config=...) was not constructed")
        durable_sleep(rt, seconds)

    @classmethod
    async def sleep_async(cls, seconds: float) -> None:
        """Async durable sleep (holds no thread)."""
        rt = _instance
        if rt is None:
            raise DBOSNotLaunchedError("DBOS(config=...) was not constructed")
        await durable_sleep_async(rt, seconds)

    # -- messages and events --------------------------------------------------------------

    @classmethod
    def send(cls, destination_id: str, message: Any, topic: str | None = None) -> None:
        """Send a message to a workflow (exactly once, even when the sender is replayed)."""
        _messaging.send(_get_instance(), destination_id, message, topic)

    @classmethod
    async def send_async(cls, destination_id: str, message: Any, topic: str | None = None) -> None:
        """Async :meth:`send`."""
        await _messaging.send_async(_get_instance(), destination_id, message, topic)

    @classmethod
    def recv(cls, topic: str | None = None, timeout_seconds: float = 60) -> Any:
        """In a workflow: the oldest message on ``topic``, or None after the timeout."""
        return _messaging.recv(_get_instance(), topic, timeout_seconds)

    @classmethod
    async def recv_async(cls, topic: str | None = None, timeout_seconds: float = 60) -> Any:
        """Async :meth:`recv` (holds no thread while it waits)."""
        return await _messaging.recv_async(_get_instance(), topic, timeout_seconds)

    @classmethod
    def set_event(cls, key: str, value: Any) -> None:
        """In a workflow: publish (or overwrite) the event ``key`` of this workflow."""
        _messaging.set_event(_get_instance(), key, value)

    @classmethod
    async def set_event_async(cls, key: str, value: Any) -> None:
        """Async :meth:`set_event`."""
        await _messaging.set_event_async(_get_instance(), key, value)

    @classmethod
    def get_event(cls, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        """The value of a workflow's event, waiting for it up to the timeout (else None)."""
        return _messaging.get_event(_get_instance(), workflow_id, key, timeout_seconds)

    @classmethod
    async def get_event_async(cls, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        """Async :meth:`get_event` (holds no thread while it waits)."""
        return await _messaging.get_event_async(_get_instance(), workflow_id, key, timeout_seconds)


def _workflow_info(func: Callable[..., Any]) -> WorkflowInfo:
    info = getattr(func, "__spindle_workflow__", None)
    if not isinstance(info, WorkflowInfo):
        raise DBOSException(f"{function_name(func)} is not a @DBOS.workflow()")
    return info


def _iso_ms(value: str | None, key: str) -> int | None:
    if value is None:
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key} must be an ISO 8601 timestamp, got {value!r}") from exc
