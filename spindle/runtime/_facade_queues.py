"""``DBOS``'s queue names of DBOS 2.30: declaring queues, enqueue by queue name,
retrieve and list queues, and their ``_async`` twins, as a base class of the facade.

Spindle's queues are declared in the process (``Queue(...)`` / ``DBOS.register_queue``) and
their workflows live in the system database; so ``retrieve_queue``/``list_queues`` answer
from the declarations, and an enqueue by name needs the queue declared here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from . import _current, _durable
from ._enqueue_options import EnqueueOptions, enqueue_with_options
from ._errors import DBOSException
from ._handles import WorkflowHandle, WorkflowHandleAsync, enqueued_handle
from ._queue import GLOBAL_QUEUES, Queue, QueueRateLimit
from ._queue_delays import promote_delayed, set_delay
from ._runtime import Runtime
from ._sysdb import SystemDatabase

P = ParamSpec("P")
R = TypeVar("R")


def _declared(queue_name: str) -> Queue:
    queue = GLOBAL_QUEUES.get(queue_name)
    if queue is None:
        raise DBOSException(
            f"Queue {queue_name} is not registered: declare it with Queue({queue_name!r}) or "
            "DBOS.register_queue first"
        )
    return queue


def delay_until(now_ms: int, delay_seconds: float | None, delay_until_epoch_ms: int | None) -> int:
    """DBOS's ``set_workflow_delay`` arguments as a due time (exactly one of the two)."""
    if delay_until_epoch_ms is not None and delay_seconds is not None:
        raise DBOSException("Specify either delay_seconds or delay_until_epoch_ms, not both")
    if delay_until_epoch_ms is not None:
        if delay_until_epoch_ms < 0:
            raise DBOSException("delay_until_epoch_ms must be >= 0")
        return delay_until_epoch_ms
    if delay_seconds is not None:
        if delay_seconds < 0:
            raise DBOSException("delay_seconds must be >= 0")
        return now_ms + int(delay_seconds * 1000)
    raise DBOSException("Must specify either delay_seconds or delay_until_epoch_ms")


def move_delay(sysdb: SystemDatabase, workflow_id: str, until: int, now_ms: int) -> str | None:
    """Move a DELAYED workflow's due time; one now due enters its queue at once. Returns
    the queue a workflow entered (for a worker to wake), else None."""
    queue_name = set_delay(sysdb, workflow_id, until)
    if queue_name is not None and until <= now_ms and promote_delayed(sysdb, queue_name, now_ms):
        return queue_name
    return None


def _set_delay(
    rt: Runtime, workflow_id: str, delay_seconds: float | None, delay_until_epoch_ms: int | None
) -> None:
    now_ms = int(rt.clock.now() * 1000)
    until = delay_until(now_ms, delay_seconds, delay_until_epoch_ms)
    entered = move_delay(rt.sysdb, workflow_id, until, now_ms)
    if entered is not None:
        rt.queues.wake(entered)  # due now: not at the worker's next look


def _owned(application_name: str | list[str] | None) -> bool:
    if application_name is None:
        return True
    names = [application_name] if isinstance(application_name, str) else application_name
    return _current.get().config.name in names


class QueueAPI:
    """The queue classmethods of ``DBOS``."""

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
    async def register_queue_async(
        cls,
        name: str,
        *,
        worker_concurrency: int | None = None,
        concurrency: int | None = None,
        limiter: QueueRateLimit | None = None,
        priority_enabled: bool = False,
        partition_queue: bool = False,
        polling_interval_sec: float = 1.0,
    ) -> Queue:
        """Async ``register_queue``: declare a queue; a launched runtime drains it at once."""
        return cls.register_queue(
            name,
            concurrency,
            limiter,
            worker_concurrency=worker_concurrency,
            priority_enabled=priority_enabled,
            polling_interval_sec=polling_interval_sec,
            partition_queue=partition_queue,
        )

    @classmethod
    def retrieve_queue(cls, name: str) -> Queue | None:
        """The queue declared under ``name``, or None (as DBOS for an unknown name)."""
        return GLOBAL_QUEUES.get(name)

    @classmethod
    async def retrieve_queue_async(cls, name: str) -> Queue | None:
        """Async :meth:`retrieve_queue`."""
        return GLOBAL_QUEUES.get(name)

    @classmethod
    def list_queues(cls, *, application_name: str | list[str] | None = None) -> list[Queue]:
        """The declared queues, in declaration order (this app's: another ``application_name``
        lists none, as its queues are declared in its own processes)."""
        return GLOBAL_QUEUES.all() if _owned(application_name) else []

    @classmethod
    async def list_queues_async(
        cls, *, application_name: str | list[str] | None = None
    ) -> list[Queue]:
        """Async :meth:`list_queues`."""
        return cls.list_queues(application_name=application_name)

    @classmethod
    def delete_queue(cls, name: str) -> None:
        """Forget the queue declared as ``name`` and stop its worker here (a no-op when
        unknown). As in DBOS, its ENQUEUED workflows stay in the database unrun until the
        queue is declared again; other processes still declaring it go on draining it."""
        GLOBAL_QUEUES.remove(name)
        rt = _current.peek()
        if rt is not None and rt.launched:
            rt.queues.retire(name)

    @classmethod
    async def delete_queue_async(cls, name: str) -> None:
        """Async :meth:`delete_queue`."""
        cls.delete_queue(name)

    @classmethod
    def enqueue_workflow(
        cls, queue_name: str, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]:
        """Enqueue a workflow on the queue declared as ``queue_name``; returns its handle."""
        return _declared(queue_name).enqueue(func, *args, **kwargs)

    @classmethod
    async def enqueue_workflow_async(
        cls, queue_name: str, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Async :meth:`enqueue_workflow`."""
        return await _declared(queue_name).enqueue_async(func, *args, **kwargs)

    @classmethod
    def set_workflow_delay(
        cls,
        workflow_id: str,
        *,
        delay_seconds: float | None = None,
        delay_until_epoch_ms: int | None = None,
    ) -> None:
        """Move a DELAYED workflow's due time (exactly one of the two); a workflow that is
        not DELAYED is left alone, as in DBOS."""
        rt = _current.get()
        rt.require_launched()
        _durable.call(
            rt,
            "DBOS.setWorkflowDelay",
            _set_delay,
            rt,
            workflow_id,
            delay_seconds,
            delay_until_epoch_ms,
        )

    @classmethod
    async def set_workflow_delay_async(
        cls,
        workflow_id: str,
        *,
        delay_seconds: float | None = None,
        delay_until_epoch_ms: int | None = None,
    ) -> None:
        """Async :meth:`set_workflow_delay`."""
        cls.set_workflow_delay(
            workflow_id, delay_seconds=delay_seconds, delay_until_epoch_ms=delay_until_epoch_ms
        )

    @classmethod
    def listen_queues(cls, queues: Sequence[Queue | str]) -> None:
        """Before launch: dequeue only from these queues in this process (as DBOS); the
        others are left to the processes that listen to them."""
        rt = _current.get()
        if rt.launched:
            raise DBOSException("listen_queues called after DBOS is launched")
        if rt.listening_queues is not None:
            raise DBOSException("listen_queues called more than once")
        rt.listening_queues = frozenset(q if isinstance(q, str) else q.name for q in queues)

    @classmethod
    def enqueue_workflow_with_options(
        cls, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Enqueue a workflow by name and options, without its function (another process
        may implement it); inside a workflow it is a child, enqueued exactly once."""
        rt = _current.get()
        return enqueued_handle(rt, lambda: enqueue_with_options(rt, options, args, kwargs))

    @classmethod
    async def enqueue_workflow_with_options_async(
        cls, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Async :meth:`enqueue_workflow_with_options`."""
        rt = _current.get()
        workflow_id, _ = enqueue_with_options(rt, options, args, kwargs)
        return WorkflowHandleAsync(rt, workflow_id, rt.active.get(workflow_id))
