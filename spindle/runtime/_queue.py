"""Queues: declared at import time, enqueued to durably, drained by the queue workers."""

from __future__ import annotations

import contextvars
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from . import _current
from ._attributes import for_new_workflow as attributes_for_new_workflow
from ._attributes import store as store_attributes
from ._classes import call_args
from ._context import ContextBlock
from ._core import record_child_start, resolve_identity
from ._duplication import DuplicationPolicy, check_policy, enqueue_or_holder
from ._errors import DBOSConflictingWorkflowError, DBOSException
from ._functions import WorkflowInfo, function_name
from ._handles import WorkflowHandle, WorkflowHandleAsync, enqueued_handle
from ._identity_columns import identity_columns
from ._queue_db import RateLimit, insert_enqueued
from ._roles import guard
from ._roles import stored as stored_auth

if TYPE_CHECKING:
    from ._runtime import Runtime

P = ParamSpec("P")
R = TypeVar("R")

#: Runtime's priority range: 1 (first) to 2**31 - 1; 0 means "no priority" and sorts first.
MAX_PRIORITY = 2**31 - 1


#: At most ``limit`` starts in any ``period`` seconds (DBOS's name for the limiter).
QueueRateLimit = RateLimit


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_limit(name: str, value: object) -> None:
    if value is not None and (not _is_int(value) or value <= 0):  # type: ignore[operator]
        raise ValueError(f"Queue {name} must be a positive integer or None, got {value!r}")


def _validate_limiter(limiter: object) -> QueueRateLimit | None:
    if limiter is None:
        return None
    if not isinstance(limiter, dict) or set(limiter) != {"limit", "period"}:
        raise ValueError(
            f"Queue limiter must be None or {{'limit': int, 'period': seconds}}, got {limiter!r}"
        )
    limit, period = limiter["limit"], limiter["period"]
    if not _is_int(limit) or limit <= 0:
        raise ValueError(f"Queue limiter['limit'] must be a positive integer, got {limit!r}")
    if (
        isinstance(period, bool)
        or not isinstance(period, int | float)
        or not math.isfinite(period)
        or period <= 0
    ):
        raise ValueError(f"Queue limiter['period'] must be a positive number, got {period!r}")
    return QueueRateLimit(limit=limit, period=float(period))


class Queue:
    """A durable queue of workflows with global and per-process concurrency limits, a rate
    limiter and optional priorities, as DBOS Transact's ``Queue``.

    Declare queues at import time, like workflows: the queue workers of ``DBOS.launch()``
    drain every declared queue.
    """

    def __init__(
        self,
        name: str,
        concurrency: int | None = None,
        limiter: QueueRateLimit | None = None,
        *,
        worker_concurrency: int | None = None,
        priority_enabled: bool = False,
        polling_interval_sec: float = 1.0,
        partition_queue: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Queue name must be a non-empty string, got {name!r}")
        _check_limit("concurrency", concurrency)
        # 0 is accepted, as DBOS: a process that enqueues to the queue but never runs its
        # workflows (they run in processes declaring a positive share).
        if worker_concurrency != 0:
            _check_limit("worker_concurrency", worker_concurrency)
        if (
            concurrency is not None
            and worker_concurrency is not None
            and worker_concurrency > concurrency
        ):
            raise ValueError(
                f"Queue worker_concurrency ({worker_concurrency}) must not exceed "
                f"concurrency ({concurrency})"
            )
        if not isinstance(priority_enabled, bool):
            raise ValueError(f"Queue priority_enabled must be a bool, got {priority_enabled!r}")
        if not isinstance(partition_queue, bool):
            raise ValueError(f"Queue partition_queue must be a bool, got {partition_queue!r}")
        if (
            isinstance(polling_interval_sec, bool)
            or not isinstance(polling_interval_sec, int | float)
            or not math.isfinite(polling_interval_sec)
            or polling_interval_sec <= 0
        ):
            raise ValueError(
                "Queue polling_interval_sec must be a positive number of seconds, "
                f"got {polling_interval_sec!r}"
            )
        self.name = name
        self.concurrency = concurrency
        self.worker_concurrency = worker_concurrency
        self.limiter = _validate_limiter(limiter)
        self.priority_enabled = priority_enabled
        self.polling_interval_sec = float(polling_interval_sec)
        #: Each enqueue names a partition (``SetEnqueueOptions(queue_partition_key=...)``),
        #: and the limits apply to every partition on its own (as DBOS).
        self.partition_queue = partition_queue
        GLOBAL_QUEUES.add(self)

    def __repr__(self) -> str:
        return (
            f"Queue({self.name!r}, concurrency={self.concurrency}, limiter={self.limiter}, "
            f"worker_concurrency={self.worker_concurrency}, "
            f"priority_enabled={self.priority_enabled}, partition_queue={self.partition_queue})"
        )

    def enqueue(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]:
        """Durably enqueue a workflow; a queue worker starts it when the limits allow."""
        rt = _current.get()
        listening = rt.listening_queues
        local = listening is None or self.name in listening  # its function is registered
        return enqueued_handle(
            rt, lambda: enqueue_workflow(rt, self, func, args, kwargs), local=local
        )

    async def enqueue_async(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Async :meth:`enqueue`: returns a handle whose result is awaited."""
        rt = _current.get()
        workflow_id, _ = enqueue_workflow(rt, self, func, args, kwargs)
        return WorkflowHandleAsync(rt, workflow_id, rt.active.get(workflow_id))


#: DBOS's internal queue: a debounced workflow given no queue runs there, and a client's
#: schedule backfill or trigger is enqueued there.
INTERNAL_QUEUE_NAME = "_dbos_internal_queue"


class QueueRegistry:
    """Queues by name, filled by ``Queue(...)`` (before or after ``DBOS(...)``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, Queue] = {}
        self._listeners: list[Callable[[Queue], None]] = []

    def add(self, queue: Queue) -> None:
        """Register a queue; a second queue under one name is an error (as DBOS)."""
        with self._lock:
            if queue.name in self._queues:
                raise ValueError(f"Queue {queue.name!r} is already declared")
            self._queues[queue.name] = queue
            listeners = list(self._listeners)
        for listener in listeners:
            listener(queue)

    def remove(self, name: str) -> Queue | None:
        """Forget the queue declared as ``name`` (``DBOS.delete_queue``); None if unknown."""
        with self._lock:
            return self._queues.pop(name, None)

    def get(self, name: str) -> Queue | None:
        """A queue by name."""
        with self._lock:
            return self._queues.get(name)

    def all(self) -> list[Queue]:
        """Every declared queue, in declaration order."""
        with self._lock:
            return list(self._queues.values())

    def clear(self) -> None:
        """Forget every queue (``DBOS.destroy(destroy_registry=True)``)."""
        with self._lock:
            self._queues.clear()

    def subscribe(self, listener: Callable[[Queue], None]) -> Callable[[], None]:
        """Call ``listener`` for each queue declared from now on; returns the unsubscriber."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe


#: ``Queue(...)`` registers here, so queues declared at import time exist before DBOS().
GLOBAL_QUEUES = QueueRegistry()


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """What ``SetEnqueueOptions`` sets for the enqueues in its block."""

    deduplication_id: str | None = None
    priority: int | None = None
    queue_partition_key: str | None = None
    #: DBOS's ``app_version``: only a process of this version dequeues the workflow.
    app_version: str | None = None
    #: DBOS's ``delay_seconds``: the workflow is DELAYED this long, then ENQUEUED.
    delay_seconds: float | None = None
    #: DBOS's ``duplication_policy`` for a held deduplication ID (see ``_duplication``).
    duplication_policy: str | None = None


_enqueue_options: contextvars.ContextVar[EnqueueOptions | None] = contextvars.ContextVar(
    "spindle_enqueue_options", default=None
)


class SetEnqueueOptions(ContextBlock[EnqueueOptions | None]):
    """Enqueue the workflows of this block with a deduplication ID, a priority and/or a
    partition key.

    A second enqueue with a deduplication ID held by an ENQUEUED or PENDING workflow of the
    same queue raises ``DBOSQueueDeduplicatedError``. Priorities run from 1 (dequeued first)
    to 2**31 - 1 and need ``Queue(..., priority_enabled=True)``. A partition key is needed
    by, and only allowed on, a ``Queue(..., partition_queue=True)``; it does not combine
    with deduplication (as DBOS).
    """

    def __init__(
        self,
        *,
        deduplication_id: str | None = None,
        priority: int | None = None,
        app_version: str | None = None,
        queue_partition_key: str | None = None,
        delay_seconds: float | None = None,
        duplication_policy: DuplicationPolicy | None = None,
    ):
        # A policy also holds outside an enqueue: checked here for its value only.
        check_policy(duplication_policy, "", deduplication_id)
        if queue_partition_key is not None and (
            not isinstance(queue_partition_key, str) or not queue_partition_key
        ):
            raise ValueError(
                f"SetEnqueueOptions queue_partition_key must be a non-empty string or None, "
                f"got {queue_partition_key!r}"
            )
        if queue_partition_key is not None and deduplication_id is not None:
            raise ValueError(
                "SetEnqueueOptions: deduplication is not supported on partitioned queues "
                "(deduplication_id and queue_partition_key together)"
            )
        if deduplication_id is not None and (
            not isinstance(deduplication_id, str) or not deduplication_id
        ):
            raise ValueError(
                f"SetEnqueueOptions deduplication_id must be a non-empty string or None, "
                f"got {deduplication_id!r}"
            )
        if priority is not None and (not _is_int(priority) or not 1 <= priority <= MAX_PRIORITY):
            raise ValueError(
                f"SetEnqueueOptions priority must be an integer from 1 to {MAX_PRIORITY}, "
                f"got {priority!r}"
            )
        if app_version is not None and (not isinstance(app_version, str) or not app_version):
            raise ValueError(
                f"SetEnqueueOptions app_version must be a non-empty string or None, "
                f"got {app_version!r}"
            )
        if delay_seconds is not None and (
            isinstance(delay_seconds, bool)
            or not isinstance(delay_seconds, int | float)
            or not math.isfinite(delay_seconds)
            or delay_seconds < 0
        ):
            raise ValueError(
                f"SetEnqueueOptions delay_seconds must be a number >= 0 or None, "
                f"got {delay_seconds!r}"
            )
        self.options = EnqueueOptions(
            deduplication_id,
            priority,
            queue_partition_key,
            app_version,
            delay_seconds,
            duplication_policy,
        )
        super().__init__(_enqueue_options, self.options)


def check_no_enqueue_options() -> None:
    """As DBOS: ``SetEnqueueOptions`` around a workflow that is started, not enqueued, is
    an error (its options would silently do nothing)."""
    options = _enqueue_options.get()
    if options is None:
        return
    named = [
        name
        for name, value in (
            ("deduplication_id", options.deduplication_id),
            ("priority", options.priority),
            ("queue_partition_key", options.queue_partition_key),
            ("delay_seconds", options.delay_seconds),
        )
        if value is not None
    ]
    if named:
        raise DBOSException(
            f"Enqueue option(s) {', '.join(named)} set on a workflow that is not being "
            "enqueued. These options are only supported when enqueueing a workflow onto a queue."
        )


def enqueue_workflow(
    rt: Runtime,
    queue: Queue,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[str, bool]:
    """Insert the ENQUEUED row and wake the queue's worker; returns the workflow ID, and
    whether this call wrote its row.

    Enqueuing the same workflow ID again returns that workflow (idempotent, as DBOS).
    """
    rt.require_launched()
    info = getattr(func, "__spindle_workflow__", None)
    if not isinstance(info, WorkflowInfo):
        raise DBOSException(f"{function_name(func)} is not a @DBOS.workflow()")
    args = call_args(func, args)  # a method's self/cls is stored by name
    options = _enqueue_options.get() or EnqueueOptions()
    if options.priority is not None and not queue.priority_enabled:
        raise DBOSException(
            f"queue {queue.name!r} was not declared with priority_enabled=True; "
            "SetEnqueueOptions(priority=...) would have no effect"
        )
    key = options.queue_partition_key
    if queue.partition_queue and key is None:
        raise DBOSException(
            f"queue {queue.name!r} is partitioned: enqueue with "
            "SetEnqueueOptions(queue_partition_key=...)"
        )
    if key is not None and not queue.partition_queue:
        raise DBOSException(
            f"queue {queue.name!r} is not partitioned (Queue(..., partition_queue=True)); "
            f"the partition key {key!r} would have no effect"
        )
    ident = resolve_identity(rt)
    with guard(func):  # required roles checked now; the assumed role is stored
        kwargs = stored_auth(kwargs)
    codec = rt.sysdb.codecs.for_type(info.serialization_type)
    inputs = codec.encode_inputs(args, kwargs, f"the inputs of workflow {info.name!r}")
    delay_until = (
        int((rt.clock.now() + options.delay_seconds) * 1000)
        if options.delay_seconds is not None
        else None
    )
    existing, holder = enqueue_or_holder(
        rt.sysdb,
        options.duplication_policy,
        queue.name,
        options.deduplication_id,
        lambda: insert_enqueued(
            rt.sysdb,
            workflow_id=ident.workflow_id,
            name=info.name,
            inputs=inputs,
            queue_name=queue.name,
            executor_id=rt.config.executor_id,
            application_version=options.app_version or rt.config.application_version,
            parent_workflow_id=ident.parent_workflow_id,
            timeout_ms=ident.timeout_ms,
            # An own timeout runs from the dequeue; an inherited deadline stays the parent's.
            deadline_epoch_ms=None if ident.own_timeout else ident.deadline_epoch_ms,
            deduplication_id=options.deduplication_id,
            priority=options.priority or 0,
            queue_partition_key=key,
            delay_until_epoch_ms=delay_until,
            identity=identity_columns(args, kwargs),
            serialization=codec.format,
        ),
    )
    if holder is not None:
        return holder, False  # "return-existing": the workflow holding the deduplication ID
    record_child_start(rt, ident, info.name)
    if existing is not None and existing.name != info.name:
        raise DBOSConflictingWorkflowError(
            ident.workflow_id,
            f"Workflow already exists with a different function name: {existing.name}, "
            f"but the provided function name is: {info.name}",
        )
    if existing is None:
        attributes = attributes_for_new_workflow()
        if attributes is not None:
            store_attributes(rt.sysdb, ident.workflow_id, attributes)
        rt.queues.wake(queue.name)
    return ident.workflow_id, existing is None
