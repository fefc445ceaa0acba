"""The ``DBOS`` class: DBOS Transact's public API, as a thin facade over the Runtime.

Each name here validates its arguments and delegates: the decorators to ``_wrappers``, the
lifecycle to ``_lifecycle``, workflow operations to ``_workflows``, schedules to
``_schedule_api``, messaging to ``_messaging``. No module of the runtime imports this one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from spindle.diagnostics import Clock, DiagnosticsSession, ShutdownTimeline, ThreadRegistry

from . import _alerts, _current, _lifecycle, _messaging, _schedule_api, _workflows
from ._alerts import AlertHandler
from ._appdb import current_session
from ._classes import CLASSES, INSTANCES, decoding
from ._config import DBOSConfig, load_config
from ._context import current_workflow
from ._core import durable_sleep, durable_sleep_async
from ._cron import check_cron
from ._errors import DBOSException, DBOSNotLaunchedError
from ._facade_auth import AuthProperties, ClassesAndRolesAPI
from ._facade_messaging import MessagingAPI
from ._facade_patching import PatchAPI
from ._facade_props import DBOSClassProperties, dbos_logger
from ._facade_queues import QueueAPI
from ._facade_schedules import ScheduleAPI, start_if_launched
from ._facade_steps import StepAPI, check_step_options
from ._facade_streams import StreamAPI
from ._facade_versions import VersionAPI
from ._facade_workflows import WorkflowAPI
from ._functions import GLOBAL_REGISTRY, StepInfo, TransactionInfo, WorkflowInfo, is_async
from ._functions import function_name as fn_name
from ._handles import WorkflowHandle, WorkflowHandleAsync
from ._kafka import KafkaSource, import_confluent_kafka
from ._launch_extras import after_destroy, after_launch
from ._pollers import POLLERS, EventSource, ReceiverPoller, ScheduledPoller
from ._queue import GLOBAL_QUEUES
from ._reset import reset_system_database
from ._roles import restoring
from ._runtime import Runtime
from ._schedules import PAUSED, WorkflowSchedule
from ._serializer import WorkflowSerializationFormat
from ._validation import ValidateArgs, validating
from ._validation import resolve as resolve_validator
from ._web_frameworks import RuntimeDashboardSource, setup_fastapi, setup_flask
from ._wrappers import step_wrapper, transaction_wrapper, workflow_wrapper

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")
T = TypeVar("T")

#: DBOS's default bound on a workflow's recoveries (a process that keeps crashing on it).
DEFAULT_MAX_RECOVERY_ATTEMPTS = 100


def _launched() -> Runtime:
    rt = _current.get()
    rt.require_launched()
    return rt


class _DBOSMeta(DBOSClassProperties, AuthProperties):
    """Class-level properties, as DBOS Transact exposes them (``DBOS.workflow_id``)."""

    @property
    def workflow_id(cls) -> str | None:
        """The ID of the workflow the caller runs in, or None outside a workflow."""
        ctx = current_workflow.get()
        return ctx.workflow_id if ctx is not None else None

    @property
    def step_id(cls) -> int | None:
        """The ID of the step running now within its workflow (None outside a step)."""
        ctx = current_workflow.get()
        return ctx.next_function_id if ctx is not None and ctx.in_step else None

    @property
    def sql_session(cls) -> Session:
        """The SQLAlchemy session of the running ``@DBOS.transaction``."""
        session = current_session.get()
        if session is None:
            raise DBOSException("DBOS.sql_session is only available inside a transaction")
        return session

    @property
    def runtime(cls) -> Runtime:
        """The running parts of this app (for tests, tools and the curious)."""
        return _current.get()

    @property
    def thread_registry(cls) -> ThreadRegistry:
        """The live registry of this app's threads."""
        return _current.get().registry

    @property
    def diagnostics(cls) -> DiagnosticsSession:
        """This app's diagnostics session (timelines, spans)."""
        diag = _current.get().diag
        if diag is None:
            raise DBOSNotLaunchedError("launch() was not called")
        return diag

    @property
    def dashboard_source(cls) -> RuntimeDashboardSource:
        """What ``spindle.web.create_app`` mounts, valid before launch (for an app whose
        lifespan launches DBOS): ``app.mount("/dbos", create_app(DBOS.dashboard_source))``."""
        return RuntimeDashboardSource(_current.get())

    @property
    def last_shutdown_timeline(cls) -> ShutdownTimeline | None:
        """The timeline of the latest ``destroy()``."""
        rt = _current.peek()
        return rt.last_timeline if rt is not None else None


class DBOS(
    WorkflowAPI,
    QueueAPI,
    MessagingAPI,
    StepAPI,
    ScheduleAPI,
    VersionAPI,
    ClassesAndRolesAPI,
    StreamAPI,
    PatchAPI,
    metaclass=_DBOSMeta,
):
    """A durable-workflow runtime, with the API of DBOS Transact for Python."""

    def __init__(
        self,
        *,
        config: DBOSConfig,
        clock: Clock | None = None,
        conductor_url: str | None = None,
        conductor_key: str | None = None,
        fastapi: Any = None,
        flask: Any = None,
    ) -> None:
        # Validate first (a bad config leaves the current instance alone); arguments win.
        cfg = load_config(config, conductor_url=conductor_url, conductor_key=conductor_key)
        self._runtime = Runtime(cfg, clock)
        logging.getLogger("spindle").setLevel(self._runtime.config.log_level)
        dbos_logger.setLevel(self._runtime.config.log_level)
        _current.install(self._runtime)
        # As DBOS: requests run as handlers; FastAPI's lifespan launches and destroys.
        if fastapi is not None:
            setup_fastapi(fastapi, type(self).launch, type(self).destroy)
        if flask is not None:
            setup_flask(flask)

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def launch(cls) -> None:
        """Open the databases, start the background threads and recover pending workflows."""
        rt = _current.get()
        _lifecycle.launch(rt)
        after_launch(rt)

    @classmethod
    def destroy(
        cls, *, destroy_registry: bool = False, workflow_completion_timeout_sec: float = 0
    ) -> None:
        """The ordered shutdown (idempotent, from any thread, also from ``atexit``)."""
        rt = _current.peek()
        if rt is not None:
            _lifecycle.destroy(rt, workflow_completion_timeout_sec)
            after_destroy(rt)
        if destroy_registry:
            GLOBAL_REGISTRY.workflows.clear()
            CLASSES.clear()
            INSTANCES.clear()
            GLOBAL_QUEUES.clear()
            POLLERS.clear()
            _alerts.clear()

    @classmethod
    def reset_system_database(
        cls,
        *,
        system_database_url: str | None = None,
        schema: str | None = None,
        truncate: bool = False,
    ) -> None:
        """For tests: destroy the system database (``truncate=True``: empty its tables, much
        faster); the next launch makes it again. Refused while DBOS is launched."""
        rt = _current.peek()
        if rt is not None and rt.launched and not rt.destroyed:
            raise DBOSException("reset_system_database: call it before launch() or after destroy()")
        url = system_database_url or (rt.config.system_database_url if rt is not None else None)
        if url is None:
            raise DBOSException("reset_system_database needs system_database_url (or DBOS(config))")
        reset_system_database(url, schema=schema, truncate=truncate)

    @classmethod
    def alert_handler(cls, func: AlertHandler) -> AlertHandler:
        """Make ``func(name, message, metadata)`` the handler of Conductor alerts (without
        one, an alert is logged)."""
        return _alerts.register(func)

    @property
    def admin_url(self) -> str | None:
        """The admin server's base URL, when it runs."""
        return self._runtime.admin_url

    @classmethod
    def admin_url_of_instance(cls) -> str | None:
        """The running app's admin server URL (None when it does not run)."""
        rt = _current.peek()
        return rt.admin_url if rt is not None else None

    # -- decorators ----------------------------------------------------------------------

    @classmethod
    def workflow(
        cls,
        *,
        name: str | None = None,
        max_recovery_attempts: int | None = DEFAULT_MAX_RECOVERY_ATTEMPTS,
        serialization_type: WorkflowSerializationFormat | None = None,
        validate_args: ValidateArgs | None = None,
    ) -> Callable[[F], F]:
        """Make a function a durable workflow (sync or ``async def``); after
        ``max_recovery_attempts`` recoveries (DBOS's default 100; None: no limit) it is
        MAX_RECOVERY_ATTEMPTS_EXCEEDED instead of run again. ``serialization_type=PORTABLE``
        stores its inputs, output and error as portable JSON whatever the application's
        serializer (other languages start it and read its result). ``validate_args`` (e.g.
        ``pydantic_args_validator``) checks the arguments each time the workflow starts
        running, after they are read back from the database."""
        if serialization_type is not None:
            serialization_type = WorkflowSerializationFormat(serialization_type)

        def decorator(func: F) -> F:
            inner: Callable[..., Any] = func
            validator = resolve_validator(func, validate_args)
            if validator is not None:
                inner = validating(func, validator, is_async=is_async(func))
            # The stored call's self/cls and authentication are restored for the body.
            body = restoring(decoding(inner, is_async=is_async(func)), is_async=is_async(func))
            info = WorkflowInfo(
                name or fn_name(func),
                body,
                is_async(func),
                max_recovery_attempts,
                serialization_type,
            )
            GLOBAL_REGISTRY.add_workflow(info)
            return workflow_wrapper(info, func)

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
        should_retry: Callable[[BaseException], Any] | None = None,
        preemptible: bool = False,
    ) -> Callable[[F], F]:
        """Make a function a checkpointed step, optionally retried with back-off
        (``should_retry(error)`` returning False stops the retries, as in DBOS)."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if interval_seconds < 0 or backoff_rate <= 0:
            raise ValueError("interval_seconds must be >= 0 and backoff_rate > 0")

        def decorator(func: F) -> F:
            step_name = name or fn_name(func)
            check_step_options(step_name, func, should_retry, preemptible)
            info = StepInfo(
                step_name,
                func,
                is_async(func),
                retries_allowed,
                max_attempts,
                interval_seconds,
                backoff_rate,
                should_retry,
                preemptible,
            )
            return step_wrapper(info, func)

        return decorator

    @classmethod
    def transaction(
        cls, *, isolation_level: str | None = None, name: str | None = None
    ) -> Callable[[F], F]:
        """Run a function in one application-database transaction, exactly once."""

        def decorator(func: F) -> F:
            info = TransactionInfo(name or fn_name(func), func, is_async(func), isolation_level)
            return transaction_wrapper(info, func)

        return decorator

    # -- pollers: schedules and event receivers ---------------------------------------------

    @classmethod
    def scheduled(cls, cron: str) -> Callable[[F], F]:
        """Run a workflow ``(scheduled_time, actual_time)`` on a cron schedule (seconds
        first when six fields), once per tick across every process on the database."""

        def decorator(func: F) -> F:
            info = _workflows.workflow_info(func)
            check_cron(cron, f"scheduled workflow {info.name!r}")
            poller = ScheduledPoller(info, cron)
            POLLERS.add_scheduled(poller)
            start_if_launched(poller)
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
            info = _workflows.workflow_info(func)
            receiver = ReceiverPoller(name or source.name, info, source, poll_timeout_sec)
            POLLERS.add_receiver(receiver)
            return func

        return decorator

    @classmethod
    def kafka_consumer(cls, config: dict[str, Any], topics: list[str]) -> Callable[[F], F]:
        """Start the workflow once per Kafka message (a ``KafkaMessage``) of ``topics``;
        needs the ``kafka`` extra (confluent-kafka)."""
        import_confluent_kafka()  # fail at decoration, naming the extra, not at launch

        def decorator(func: F) -> F:
            info = _workflows.workflow_info(func)
            source = KafkaSource(config, topics, info.name)
            return cls.event_receiver(source)(func)

        return decorator

    @classmethod
    def list_schedules(
        cls,
        *,
        status: str | list[str] | None = None,
        workflow_name: str | list[str] | None = None,
        schedule_name_prefix: str | list[str] | None = None,
    ) -> list[WorkflowSchedule]:
        """The stored schedules, optionally filtered."""
        return _schedule_api.list_schedules(
            _current.get(), status, workflow_name, schedule_name_prefix
        )

    @classmethod
    def get_schedule(cls, name: str) -> WorkflowSchedule | None:
        """One schedule by name, or None."""
        return _schedule_api.get_schedule(_current.get(), name)

    @classmethod
    def delete_schedule(cls, name: str) -> None:
        """Delete a schedule (no-op if missing); its thread stops within one poll."""
        _schedule_api.delete_schedule(_current.get(), name)

    @classmethod
    def pause_schedule(cls, name: str) -> None:
        """Pause a schedule: it does not fire until resumed."""
        _schedule_api.set_schedule_status(_current.get(), name, PAUSED)

    @classmethod
    def resume_schedule(cls, name: str) -> None:
        """Resume a paused schedule."""
        _schedule_api.set_schedule_status(_current.get(), name, "ACTIVE")

    @classmethod
    def backfill_schedule(
        cls, schedule_name: str, start: datetime, end: datetime
    ) -> list[WorkflowHandle[None]]:
        """Start the ticks of ``[start, end)`` that never ran (ticks are not backfilled on
        their own); ticks already started anywhere are not started again."""
        rt = _launched()
        ids = _schedule_api.backfill(rt, schedule_name, start, end)
        return [_workflows.handle(rt, i) for i in ids]

    @classmethod
    def trigger_schedule(cls, schedule_name: str) -> WorkflowHandle[None]:
        """Start the schedule's workflow now, outside its cron."""
        rt = _launched()
        return _workflows.handle(rt, _schedule_api.trigger(rt, schedule_name))

    # -- queues ------------------------------------------------------------------------------

    # -- starting and inspecting workflows ------------------------------------------------

    @classmethod
    def start_workflow(cls, func: Callable[..., R], *args: Any, **kwargs: Any) -> WorkflowHandle[R]:
        """Start a workflow in the background; returns its handle at once."""
        return _workflows.start_workflow(_current.get(), func, args, kwargs)

    @classmethod
    async def start_workflow_async(
        cls, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Start a workflow from async code; async workflows run on the caller's loop."""
        return _workflows.start_workflow_async(_current.get(), func, args, kwargs)

    @classmethod
    def retrieve_workflow(
        cls, workflow_id: str, existing_workflow: bool = True
    ) -> WorkflowHandle[Any]:
        """A handle to a workflow by ID (raises if it does not exist)."""
        rt = _launched()
        if existing_workflow:
            _workflows.require_retrievable(rt, workflow_id)
        return _workflows.handle(rt, workflow_id)

    @classmethod
    async def retrieve_workflow_async(
        cls, workflow_id: str, existing_workflow: bool = True
    ) -> WorkflowHandleAsync[Any]:
        """Async :meth:`retrieve_workflow`."""
        rt = _current.get()
        if existing_workflow:
            _workflows.require_retrievable(rt, workflow_id)
        return WorkflowHandleAsync(rt, workflow_id, rt.active.get(workflow_id))

    @classmethod
    def sleep(cls, seconds: float) -> None:
        """Durable sleep: a recovered workflow sleeps only the time left."""
        durable_sleep(_current.get(), seconds)

    @classmethod
    async def sleep_async(cls, seconds: float) -> None:
        """Async durable sleep (holds no thread)."""
        await durable_sleep_async(_current.get(), seconds)

    # -- messages and events --------------------------------------------------------------

    @classmethod
    def recv(cls, topic: str | None = None, timeout_seconds: float = 60) -> Any:
        """In a workflow: the oldest message on ``topic``, or None after the timeout."""
        return _messaging.recv(_current.get(), topic, timeout_seconds)

    @classmethod
    async def recv_async(cls, topic: str | None = None, timeout_seconds: float = 60) -> Any:
        """Async :meth:`recv` (holds no thread while it waits)."""
        return await _messaging.recv_async(_current.get(), topic, timeout_seconds)

    @classmethod
    def set_event(
        cls,
        key: str,
        value: Any,
        *,
        serialization_type: WorkflowSerializationFormat = WorkflowSerializationFormat.DEFAULT,
    ) -> None:
        """In a workflow: publish (or overwrite) the event ``key`` of this workflow
        (``serialization_type``: its format, the application's serializer by default)."""
        _messaging.set_event(_current.get(), key, value, serialization_type)

    @classmethod
    async def set_event_async(
        cls,
        key: str,
        value: Any,
        *,
        serialization_type: WorkflowSerializationFormat = WorkflowSerializationFormat.DEFAULT,
    ) -> None:
        """Async :meth:`set_event`."""
        await _messaging.set_event_async(_current.get(), key, value, serialization_type)

    @classmethod
    def get_event(cls, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        """The value of a workflow's event, waiting for it up to the timeout (else None)."""
        return _messaging.get_event(_current.get(), workflow_id, key, timeout_seconds)

    @classmethod
    async def get_event_async(cls, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        """Async :meth:`get_event` (holds no thread while it waits)."""
        return await _messaging.get_event_async(_current.get(), workflow_id, key, timeout_seconds)
