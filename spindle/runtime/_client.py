"""``DBOSClient``: DBOS's client for a process with no workflow code (a web tier, a script).

It talks to the system database only: enqueues workflows by name for the app's queue
workers, sends messages, reads events, statuses and steps, and manages workflows. It runs
no workflow, starts no thread and never migrates the schema (an app must have launched on
this database first); waits (``get_result``, ``get_event``) poll from the caller's thread.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Unpack

from . import _introspect_db, _introspection
from ._client_handles import (
    CLIENT_EXECUTOR_ID,
    WorkflowHandleClient,
    WorkflowHandleClientAsync,
    _poll,
)
from ._client_management import ClientManagement
from ._client_schedules import ClientSchedules
from ._enqueue_options import EnqueueOptions, enqueue_by_name
from ._errors import (
    DBOSException,
    DBOSNonExistentWorkflowError,
)
from ._introspection import StepInfo, WorkflowFilters
from ._management import check_handles, first_ended, fork_placed
from ._messaging_db import NULL_TOPIC, MessagingDatabase
from ._queue_db import requeue_resumed
from ._serialization import Codecs, check_serializer
from ._serializer import Serializer, WorkflowSerializationFormat
from ._status import WorkflowStatus
from ._streams import END, StreamDB, next_value
from ._sysdb import SystemDatabase


class DBOSClient(ClientManagement, ClientSchedules):
    """DBOS's ``DBOSClient(system_database_url=...)``: enqueue, message and manage the
    workflows of an app that runs elsewhere, on the same system database."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        system_database_url: str | None = None,
        application_database_url: str | None = None,
        dbos_system_schema: str | None = "dbos",
        system_database_pool_size: int | None = None,
        application_name: str | None = None,
        serializer: Serializer | None = None,
    ) -> None:
        url = system_database_url or database_url or application_database_url
        if not url:
            raise DBOSException("DBOSClient needs system_database_url")
        if dbos_system_schema not in (None, "dbos"):
            raise DBOSException(
                f"dbos_system_schema={dbos_system_schema!r}: Spindle keeps its tables in 'dbos'"
            )
        pool = 5 if system_database_pool_size is None else system_database_pool_size
        if pool < 1:
            raise DBOSException("system_database_pool_size must be >= 1")
        if not check_serializer(serializer):
            raise DBOSException(f"serializer must be a Serializer or None, got {serializer!r}")
        self.application_name = application_name
        # The app's serializer: what the client writes, and a format it can read back.
        self._sysdb = SystemDatabase(
            url, pool_size=pool, max_connections=pool, codecs=Codecs(serializer)
        )
        self._messages = MessagingDatabase(self._sysdb)
        # Set by destroy(): a wait in another thread returns instead of polling on.
        self._stop = threading.Event()

    def destroy(self) -> None:
        """Close the client's connections (waits in progress raise)."""
        self._stop.set()
        self._sysdb.close()

    # -- enqueue -------------------------------------------------------------------------

    def _enqueue(self, options: EnqueueOptions, args: tuple[Any, ...], kwargs: Any) -> str:
        workflow_id, _ = enqueue_by_name(
            self._sysdb,
            options,
            args,
            kwargs,
            workflow_id=options.get("workflow_id") or str(uuid.uuid4()),
            executor_id=CLIENT_EXECUTOR_ID,
            now=time.time(),
        )
        return workflow_id

    def enqueue(
        self, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandleClient[Any]:
        """Enqueue the workflow ``options['workflow_name']`` on ``options['queue_name']``;
        an app process draining that queue runs it (idempotent by ``workflow_id``)."""
        return WorkflowHandleClient(self, self._enqueue(options, args, kwargs))

    async def enqueue_async(
        self, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandleClientAsync[Any]:
        workflow_id = await asyncio.to_thread(self._enqueue, options, args, kwargs)
        return WorkflowHandleClientAsync(self, workflow_id)

    # -- messages and events -------------------------------------------------------------

    def send(
        self,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        *,
        serialization_type: WorkflowSerializationFormat
        | None = WorkflowSerializationFormat.DEFAULT,
    ) -> None:
        """Send ``message`` to a workflow (on PostgreSQL its receiver is woken by NOTIFY);
        ``serialization_type``: its format (the client's serializer by default)."""
        if idempotency_key is not None:
            raise DBOSException(
                "DBOSClient.send(idempotency_key=) is not supported by Spindle yet: send from "
                "a workflow, or DBOS.send(idempotency_key=) in an app process"
            )
        codec = self._sysdb.codecs.for_type(serialization_type)
        data = codec.encode(message, "the message of DBOSClient.send")
        topic_s = NULL_TOPIC if topic is None else topic
        self._messages.send(destination_id, topic_s, data, serialization=codec.format)

    async def send_async(
        self,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        *,
        serialization_type: WorkflowSerializationFormat
        | None = WorkflowSerializationFormat.DEFAULT,
    ) -> None:
        """Async :meth:`send`."""
        await asyncio.to_thread(
            functools.partial(
                self.send,
                destination_id,
                message,
                topic,
                idempotency_key,
                serialization_type=serialization_type,
            )
        )

    def get_event(self, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        """A workflow's event, polled for up to ``timeout_seconds`` (None when unset)."""

        def read() -> tuple[bool, Any]:
            got = self._messages.get_event(workflow_id, key)
            return (True, self._sysdb.codecs.decode(*got)) if got is not None else (False, None)

        return _poll(read, timeout_seconds, self._stop)[1]

    async def get_event_async(self, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        return await asyncio.to_thread(self.get_event, workflow_id, key, timeout_seconds)

    # -- reading -------------------------------------------------------------------------

    def read_stream(self, workflow_id: str, key: str, *, offset: int = 0) -> Iterator[Any]:
        """A workflow's stream, in order from ``offset``, until it is closed or the workflow
        is no longer active (polled: the client has no listener thread)."""
        db = StreamDB(self._sysdb)
        while True:
            _, value = _poll(
                functools.partial(next_value, db, workflow_id, key, offset), None, self._stop
            )
            if value is END:
                return
            yield value
            offset += 1

    async def read_stream_async(
        self, workflow_id: str, key: str, *, offset: int = 0
    ) -> AsyncIterator[Any]:
        """Async :meth:`read_stream` (each poll runs off the loop)."""
        db = StreamDB(self._sysdb)
        while True:
            _, value = await asyncio.to_thread(
                _poll, functools.partial(next_value, db, workflow_id, key, offset), None, self._stop
            )
            if value is END:
                return
            yield value
            offset += 1

    def _status(self, workflow_id: str) -> WorkflowStatus | None:
        found = _introspection.list_workflows_in(self._sysdb, {"workflow_ids": [workflow_id]})
        return found[0] if found else None

    def retrieve_workflow(self, workflow_id: str) -> WorkflowHandleClient[Any]:
        """A handle to an existing workflow (raises for an unknown ID)."""
        if self._sysdb.get_status(workflow_id) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        return WorkflowHandleClient(self, workflow_id)

    async def retrieve_workflow_async(self, workflow_id: str) -> WorkflowHandleClientAsync[Any]:
        await asyncio.to_thread(self.retrieve_workflow, workflow_id)
        return WorkflowHandleClientAsync(self, workflow_id)

    def wait_first(
        self, handles: list[WorkflowHandleClient[Any]], *, polling_interval_sec: float = 1.0
    ) -> WorkflowHandleClient[Any]:
        """The first of ``handles`` whose workflow ended (success, error or cancelled).

        Polls from the caller's thread (the client has no thread): back-off from 10 ms up
        to ``polling_interval_sec``."""
        return {h.workflow_id: h for h in handles}[self._first_ended(handles, polling_interval_sec)]

    async def wait_first_async(
        self, handles: list[WorkflowHandleClientAsync[Any]], *, polling_interval_sec: float = 1.0
    ) -> WorkflowHandleClientAsync[Any]:
        """Async :meth:`wait_first` (the polls run off the loop)."""
        first = await asyncio.to_thread(self._first_ended, handles, polling_interval_sec)
        return {h.workflow_id: h for h in handles}[first]

    def _first_ended(self, handles: Sequence[Any], polling_interval_sec: float) -> str:
        ids = check_handles(handles)
        if polling_interval_sec <= 0:
            raise ValueError("polling_interval_sec must be > 0")

        def ended() -> tuple[bool, str | None]:
            first = first_ended(self._sysdb, ids)
            return first is not None, first

        _, first = _poll(ended, None, self._stop, max_delay=polling_interval_sec)
        return str(first)

    def list_workflows(self, **filters: Unpack[WorkflowFilters]) -> list[WorkflowStatus]:
        """Workflows matching DBOS's filters (as ``DBOS.list_workflows``)."""
        return _introspection.list_workflows_in(self._sysdb, filters)

    async def list_workflows_async(
        self, **filters: Unpack[WorkflowFilters]
    ) -> list[WorkflowStatus]:
        return await asyncio.to_thread(_introspection.list_workflows_in, self._sysdb, filters)

    def list_queued_workflows(self, **filters: Unpack[WorkflowFilters]) -> list[WorkflowStatus]:
        """Workflows still in a queue (as ``DBOS.list_queued_workflows``)."""
        return _introspection.list_workflows_in(self._sysdb, filters, queues_only=True)

    async def list_queued_workflows_async(
        self, **filters: Unpack[WorkflowFilters]
    ) -> list[WorkflowStatus]:
        return await asyncio.to_thread(self.list_queued_workflows, **filters)

    def list_workflow_steps(
        self,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[StepInfo]:
        """A workflow's recorded steps, in order."""
        return _introspection.list_steps_in(
            self._sysdb, workflow_id, load_output=load_output, limit=limit, offset=offset
        )

    async def list_workflow_steps_async(self, workflow_id: str) -> list[StepInfo]:
        return await asyncio.to_thread(self.list_workflow_steps, workflow_id)

    # -- management ----------------------------------------------------------------------

    def resume_workflow(
        self, workflow_id: str, *, queue_name: str | None = None
    ) -> WorkflowHandleClient[Any]:
        """Put a cancelled or failed workflow back in a queue (its own, or ``queue_name``):
        an app process draining that queue resumes it from its last completed step.

        The client runs no workflow, so one that was never queued needs ``queue_name``.
        """
        if self._sysdb.get_status(workflow_id) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        if queue_name is not None:
            _introspect_db.set_queue(self._sysdb, workflow_id, queue_name)
        if requeue_resumed(self._sysdb, workflow_id) is None:
            raise DBOSException(
                f"workflow {workflow_id} is on no queue (or already succeeded): the client "
                "runs no workflow, pass resume_workflow(..., queue_name=) for an app to run it"
            )
        return WorkflowHandleClient(self, workflow_id)

    async def resume_workflow_async(
        self, workflow_id: str, *, queue_name: str | None = None
    ) -> WorkflowHandleClientAsync[Any]:
        await asyncio.to_thread(self.resume_workflow, workflow_id, queue_name=queue_name)
        return WorkflowHandleClientAsync(self, workflow_id)

    def resume_workflows(
        self, workflow_ids: list[str], *, queue_name: str | None = None
    ) -> list[WorkflowHandleClient[Any]]:
        """Resume several workflows (each back in its queue, or in ``queue_name``)."""
        return [self.resume_workflow(i, queue_name=queue_name) for i in workflow_ids]

    async def resume_workflows_async(
        self, workflow_ids: list[str], *, queue_name: str | None = None
    ) -> list[WorkflowHandleClientAsync[Any]]:
        """Async :meth:`resume_workflows`."""
        handles = await asyncio.to_thread(
            self.resume_workflows, workflow_ids, queue_name=queue_name
        )
        return [WorkflowHandleClientAsync(self, h.workflow_id) for h in handles]

    def fork_workflow(
        self,
        workflow_id: str,
        start_step: int,
        *,
        application_version: str | None = None,
        queue_name: str | None = None,
        queue_partition_key: str | None = None,
        timeout_seconds: float | None = None,
    ) -> WorkflowHandleClient[Any]:
        """Copy a workflow under a new ID onto ``queue_name``: an app draining that queue
        replays the steps before ``start_step`` and runs the rest (the client runs none,
        so the queue is required)."""
        if queue_name is None:
            raise DBOSException(
                "DBOSClient.fork_workflow needs queue_name: the client runs no workflow, an "
                "app process draining that queue runs the fork"
            )
        forked = fork_placed(
            self._sysdb,
            workflow_id,
            start_step,
            executor_id=CLIENT_EXECUTOR_ID,
            new_workflow_id=str(uuid.uuid4()),
            application_version=application_version,
            queue_name=queue_name,
            queue_partition_key=queue_partition_key,
            timeout_seconds=timeout_seconds,
            now_ms=None,  # a queued fork's timeout runs from its dequeue
        )
        return WorkflowHandleClient(self, forked)

    async def fork_workflow_async(
        self, workflow_id: str, start_step: int, **options: Any
    ) -> WorkflowHandleClientAsync[Any]:
        handle = await asyncio.to_thread(self.fork_workflow, workflow_id, start_step, **options)
        return WorkflowHandleClientAsync(self, handle.workflow_id)
