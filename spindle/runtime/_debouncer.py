"""DBOS's ``Debouncer`` and ``DebouncerClient``: many calls under one key, one workflow.

Built on the DELAYED queue status, not on a thread or a waiting workflow: the first call
enqueues the workflow DELAYED by the debounce period, with the deduplication ID
``<workflow name>-<key>``; each later call, while that workflow is still DELAYED, moves its
due time and replaces its inputs (the last call's inputs run, as DBOS). The queue worker's
existing ``promote_delayed`` starts it when it falls due. ``debounce_timeout_sec`` caps
the due time at the first call's time plus the timeout, computed from the row's
``created_at``, so no schema change is needed.

A workflow that has left DELAYED (started, or ENQUEUED) is no longer extended: it gives
up the key and the next call starts a new window with a new workflow. Migration v8 makes
DELAYED rows hold their deduplication ID, so two first calls racing cannot both insert:
the loser gets ``DBOSQueueDeduplicatedError`` and extends the winner's workflow.
"""

from __future__ import annotations

import asyncio
import functools
import types
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

import sqlalchemy as sa

from . import _current, _durable
from ._classes import call_args
from ._db_retry import retried
from ._errors import DBOSException, DBOSQueueDeduplicatedError
from ._functions import GLOBAL_REGISTRY, WorkflowInfo, function_name
from ._handles import WorkflowHandle, WorkflowHandleAsync
from ._queue import GLOBAL_QUEUES, INTERNAL_QUEUE_NAME, Queue, SetEnqueueOptions, _enqueue_options
from ._roles import guard
from ._roles import stored as stored_auth
from ._rows import DELAYED, ENQUEUED, PENDING, now_ms
from ._schema import workflow_status as ws

if TYPE_CHECKING:
    from ._client import DBOSClient
    from ._client_handles import WorkflowHandleClient, WorkflowHandleClientAsync
    from ._enqueue_options import EnqueueOptions
    from ._sysdb import SystemDatabase

P = ParamSpec("P")
R = TypeVar("R", covariant=True)


def _internal_queue() -> Queue:
    # Declared on first use, not at import: an app that never debounces has no extra queue.
    found = GLOBAL_QUEUES.get(INTERNAL_QUEUE_NAME)
    return found if found is not None else Queue(INTERNAL_QUEUE_NAME)


def _queue_name(queue: Queue | str | None) -> str | None:
    return queue.name if isinstance(queue, Queue) else queue


def _check_period(debounce_period_sec: float, debounce_timeout_sec: float | None) -> None:
    if debounce_period_sec < 0:
        raise DBOSException("debounce_period_sec must be >= 0")
    if debounce_timeout_sec is not None and debounce_timeout_sec <= 0:
        raise DBOSException("debounce_timeout_sec must be > 0")


@retried
def bounce(
    sysdb: SystemDatabase,
    *,
    queue_name: str,
    deduplication_id: str,
    inputs: bytes,
    due_epoch_ms: int,
    timeout_ms: int | None,
    serialization: str | None = None,
) -> str | None:
    """Extend the DELAYED workflow holding ``deduplication_id`` on the queue: new inputs,
    new due time (capped at its creation plus ``timeout_ms``). Returns its ID, or None
    when no workflow of that key is DELAYED any more (the caller enqueues a new one).

    One UPDATE: a row the queue worker promotes at the same moment no longer matches
    ``status = DELAYED``, so an extension never lands on a workflow that already started.
    """
    due: Any = sa.literal(due_epoch_ms)
    if timeout_ms is not None:
        cap = ws.c.created_at + timeout_ms
        due = sa.case((cap < due_epoch_ms, cap), else_=due_epoch_ms)
    stmt = (
        ws.update()
        .where(
            ws.c.queue_name == queue_name,
            ws.c.deduplication_id == deduplication_id,
            ws.c.status == DELAYED,
        )
        .values(
            inputs=inputs,
            serialization=serialization,
            delay_until_epoch_ms=due,
            updated_at=now_ms(),
        )
        .returning(ws.c.workflow_uuid)
    )
    with sysdb.transaction() as conn:
        row = conn.execute(stmt).one_or_none()
        if row is not None:
            return str(row[0])
        # The key's workflow already left DELAYED (it is ENQUEUED or running): it keeps
        # running with the inputs it has, and gives up the key so that this call opens a
        # new window (else the fresh enqueue would be deduplicated against it).
        conn.execute(
            ws.update()
            .where(
                ws.c.queue_name == queue_name,
                ws.c.deduplication_id == deduplication_id,
                ws.c.status.in_([ENQUEUED, PENDING]),
            )
            .values(deduplication_id=None)
        )
    return None


class Debouncer(Generic[P, R]):
    """Debounce a workflow: ``debounce(key, period, *args)`` starts it once ``period``
    seconds pass with no other call under ``key`` (or ``debounce_timeout_sec`` after the
    first call), with the last call's arguments."""

    def __init__(
        self,
        workflow_name: str,
        *,
        debounce_timeout_sec: float | None = None,
        queue: Queue | str | None = None,
    ) -> None:
        if debounce_timeout_sec is not None and debounce_timeout_sec <= 0:
            raise DBOSException("debounce_timeout_sec must be > 0")
        self.func_name = workflow_name
        self.debounce_timeout_sec = debounce_timeout_sec
        self.queue_name = _queue_name(queue)
        # Set by create(): the decorated function itself, so no registry lookup is needed.
        self._func: Callable[..., Any] | None = None

    @staticmethod
    def create(
        workflow: Callable[P, R],
        *,
        debounce_timeout_sec: float | None = None,
        queue: Queue | str | None = None,
    ) -> Debouncer[P, R]:
        """A debouncer of the ``@DBOS.workflow()`` function ``workflow``."""
        made = Debouncer[P, R](
            _workflow_name(workflow), debounce_timeout_sec=debounce_timeout_sec, queue=queue
        )
        made._func = workflow
        return made

    @staticmethod
    def create_async(
        workflow: Callable[P, Coroutine[Any, Any, R]],
        *,
        debounce_timeout_sec: float | None = None,
        queue: Queue | str | None = None,
    ) -> Debouncer[P, R]:
        """:meth:`create` for an async workflow."""
        made = Debouncer[P, R](
            _workflow_name(workflow), debounce_timeout_sec=debounce_timeout_sec, queue=queue
        )
        made._func = workflow
        return made

    def _queue(self) -> Queue:
        if self.queue_name is None:
            return _internal_queue()
        found = GLOBAL_QUEUES.get(self.queue_name)
        if found is None:
            raise DBOSException(f"Invalid queue name provided to debouncer: {self.queue_name}")
        return found

    def debounce(
        self, debounce_key: str, debounce_period_sec: float, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]:
        """Submit a call under ``debounce_key``; returns the handle of the workflow that
        will run (the same one for every call of one debounce window)."""
        _check_period(debounce_period_sec, None)
        rt = _current.get()
        rt.require_launched()
        options = _enqueue_options.get()
        if options is not None and options.deduplication_id is not None:
            raise DBOSException(
                "Cannot debounce a workflow with a deduplication_id set: the debounce "
                "key is used as the workflow's deduplication ID."
            )
        if options is not None and options.delay_seconds is not None:
            raise DBOSException(
                "Cannot debounce a workflow with a delay set: the debounce period "
                "controls the workflow's delay."
            )
        func = self._func or _registered(self.func_name)
        if func is None:
            raise DBOSException(f"Invalid workflow name provided to debouncer: {self.func_name}")
        queue = self._queue()
        dedup = f"{self.func_name}-{debounce_key}"
        with guard(func):  # required roles are checked on every call, as on an enqueue
            stored = stored_auth(dict(kwargs))
        info = GLOBAL_REGISTRY.workflow(self.func_name)
        codec = rt.sysdb.codecs.for_type(info.serialization_type if info else None)
        inputs = codec.encode_inputs(
            call_args(func, args), stored, f"the inputs of workflow {self.func_name!r}"
        )
        timeout_ms = _ms(self.debounce_timeout_sec)
        delay = debounce_period_sec
        if self.debounce_timeout_sec is not None:
            delay = min(delay, self.debounce_timeout_sec)
        while True:
            # Inside a workflow the bounce is a step (as DBOS's): a replay returns what the
            # first execution found instead of extending the window again.
            found = _durable.call(
                rt,
                "DBOS.debounce_delayed_workflow",
                functools.partial(
                    bounce,
                    rt.sysdb,
                    queue_name=queue.name,
                    deduplication_id=dedup,
                    inputs=inputs,
                    due_epoch_ms=int((rt.clock.now() + debounce_period_sec) * 1000),
                    timeout_ms=timeout_ms,
                    serialization=codec.format,
                ),
            )
            if found is not None:
                return WorkflowHandle(rt, found, rt.active.get(found))
            try:
                with SetEnqueueOptions(deduplication_id=dedup, delay_seconds=delay):
                    return queue.enqueue(cast(Callable[P, R], func), *args, **kwargs)
            except DBOSQueueDeduplicatedError:
                # A concurrent first call took the key between our bounce and our insert
                # (the index holds DELAYED keys, migration v8): extend that one instead.
                continue

    async def debounce_async(
        self, debounce_key: str, debounce_period_sec: float, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandleAsync[R]:
        """:meth:`debounce` off the event loop; returns an async handle."""
        handle = await asyncio.to_thread(
            self.debounce, debounce_key, debounce_period_sec, *args, **kwargs
        )
        rt = _current.get()
        return WorkflowHandleAsync(rt, handle.workflow_id, rt.active.get(handle.workflow_id))


def _workflow_name(workflow: Callable[..., Any]) -> str:
    if isinstance(workflow, types.MethodType):
        raise TypeError("Only workflow functions may be debounced, not methods")
    info = getattr(workflow, "__spindle_workflow__", None)
    if not isinstance(info, WorkflowInfo):
        raise DBOSException(f"{function_name(workflow)} is not a @DBOS.workflow()")
    return info.name


def _registered(name: str) -> Callable[..., Any] | None:
    info = GLOBAL_REGISTRY.workflow(name)
    if info is None or not isinstance(
        getattr(info.func, "__spindle_workflow__", None), WorkflowInfo
    ):
        return None
    return info.func


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


class DebouncerClient(Generic[R]):
    """:class:`Debouncer` for a :class:`DBOSClient` process: the workflow is named by
    ``workflow_options`` (DBOS's ``EnqueueOptions``) and runs in an app process."""

    def __init__(
        self,
        client: DBOSClient,
        workflow_options: EnqueueOptions,
        *,
        debounce_timeout_sec: float | None = None,
        queue: Queue | str | None = None,
    ) -> None:
        if workflow_options.get("deduplication_id") is not None:
            raise DBOSException(
                "Cannot debounce a workflow with a deduplication_id set: the debounce "
                "key is used as the workflow's deduplication ID."
            )
        if workflow_options.get("delay_seconds") is not None:
            raise DBOSException(
                "Cannot debounce a workflow with a delay set: the debounce period "
                "controls the workflow's delay."
            )
        if debounce_timeout_sec is not None and debounce_timeout_sec <= 0:
            raise DBOSException("debounce_timeout_sec must be > 0")
        self.client = client
        self.workflow_options = workflow_options
        self.debounce_timeout_sec = debounce_timeout_sec
        self.queue_name = _queue_name(queue) or workflow_options["queue_name"]

    def debounce(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandleClient[R]:
        """Submit a call under ``debounce_key`` (see :meth:`Debouncer.debounce`)."""
        from ._client_handles import WorkflowHandleClient

        _check_period(debounce_period_sec, None)
        name = self.workflow_options["workflow_name"]
        dedup = f"{name}-{debounce_key}"
        codec = self.client._sysdb.codecs.for_type(self.workflow_options.get("serialization_type"))
        inputs = codec.encode_inputs(args, kwargs, f"the inputs of workflow {name!r}")
        delay = debounce_period_sec
        if self.debounce_timeout_sec is not None:
            delay = min(delay, self.debounce_timeout_sec)
        options = cast(
            "EnqueueOptions",
            {
                **self.workflow_options,
                "queue_name": self.queue_name,
                "deduplication_id": dedup,
                "delay_seconds": delay,
            },
        )
        while True:
            found = bounce(
                self.client._sysdb,
                queue_name=self.queue_name,
                deduplication_id=dedup,
                inputs=inputs,
                due_epoch_ms=now_ms() + int(debounce_period_sec * 1000),
                timeout_ms=_ms(self.debounce_timeout_sec),
                serialization=codec.format,
            )
            if found is not None:
                return WorkflowHandleClient[R](self.client, found)
            try:
                handle = self.client.enqueue(options, *args, **kwargs)
            except DBOSQueueDeduplicatedError:
                continue  # a concurrent first call took the key: extend that one
            return cast("WorkflowHandleClient[R]", handle)

    async def debounce_async(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandleClientAsync[R]:
        """:meth:`debounce` off the event loop; returns an async handle."""
        from ._client_handles import WorkflowHandleClientAsync

        handle = await asyncio.to_thread(
            self.debounce, debounce_key, debounce_period_sec, *args, **kwargs
        )
        return WorkflowHandleClientAsync[R](self.client, handle.workflow_id)
