"""``DBOSClient``'s management members of DBOS 2.30 (mixed in; needs ``_sysdb``): bulk
cancel/resume/delete, delays, attributes, application versions, bulk and transactional
sends, the transactional enqueue, and a schedule's backfill and trigger.

Each calls the same database functions the ``DBOS`` facade calls (``_management``,
``_introspect_db``, ``_versions``, ``_attributes``, ``_facade_queues``, ``_bulk_send``,
``_txn_writes``); the client only adds what a process with no runtime needs: it runs no
workflow and starts no thread, so what an app would run here is put on a queue instead.

**Backfill and trigger.** DBOS's client enqueues a schedule's ticks on its internal queue
(``_dbos_internal_queue``), and so does this one, under the live scheduler's workflow IDs
(a tick already started anywhere is not enqueued again). A Spindle app drains that queue
once it declares it (``Queue("_dbos_internal_queue")``, or a ``Debouncer`` without a
queue): the client cannot run the ticks itself, and an app that never declares the
queue leaves them ENQUEUED, visible in ``list_queued_workflows``.

**Queues.** Spindle's queues are declared in each app process, not stored in the
database, so a client has none to list, retrieve, register or delete: those members
raise, saying so, rather than answer about queues that are not there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from . import _introspect_db, _txn_writes
from ._attributes import replace as replace_attributes
from ._bulk_send import send_many
from ._client_handles import CLIENT_EXECUTOR_ID, WorkflowHandleClient
from ._cron import trigger_workflow_id
from ._db_retry import retried
from ._enqueue_options import EnqueueOptions
from ._errors import DBOSException, DBOSNonExistentWorkflowError
from ._facade_messaging import SendMessage
from ._facade_queues import delay_until, move_delay
from ._messaging_db import NULL_TOPIC
from ._queue import INTERNAL_QUEUE_NAME
from ._queue_db import insert_enqueued
from ._rows import now_ms
from ._schedule_api import backfill_ticks
from ._schedules import ScheduleStore, WorkflowSchedule
from ._serialization import serialize
from ._sysdb import SystemDatabase
from ._versions import VersionInfo, latest_in, list_in, set_latest_in

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from ._client_handles import ClientLike


def _no_queues(member: str) -> DBOSException:
    return DBOSException(
        f"DBOSClient.{member}: Spindle's queues are declared in each app process "
        "(Queue(...) / DBOS.register_queue), not stored in the system database, so a "
        "client has none to manage; call DBOS.{member} in an app process"
    )


def _checked_send_options(serialization_type: Any, send_to_forks: bool) -> None:
    # DBOS's default is its WorkflowSerializationFormat.DEFAULT, whose value is "None".
    if serialization_type is not None and str(getattr(serialization_type, "value", "")) != "None":
        raise DBOSException("DBOSClient: Spindle pickles every value; serialization_type is fixed")
    if send_to_forks:
        raise DBOSException("send_to_forks=True is not supported by Spindle")


def _message_rows(messages: Sequence[SendMessage], what: str) -> list[tuple[str, str, bytes]]:
    if any(m.idempotency_key is not None for m in messages):
        raise DBOSException(
            f"DBOSClient.{what}: idempotency_key is not supported by Spindle's client (a "
            "keyed send runs as a small workflow, which only an app process can run)"
        )
    return [
        (
            m.destination_id,
            NULL_TOPIC if m.topic is None else m.topic,
            serialize(m.message, f"a message of DBOSClient.{what}"),
        )
        for m in messages
    ]


@retried
def _ping(sysdb: SystemDatabase) -> None:
    with sysdb.transaction(read=True) as conn:
        conn.exec_driver_sql("SELECT 1")


class ClientManagement:
    """The management members of ``DBOSClient`` (mixed in; needs ``_sysdb``)."""

    _sysdb: SystemDatabase
    application_name: str | None

    def _handle(self, workflow_id: str) -> WorkflowHandleClient[Any]:
        # Mixed into DBOSClient, which has what a handle needs.
        return WorkflowHandleClient(cast("ClientLike", self), workflow_id)

    def cancel_workflow(self, workflow_id: str, *, cancel_children: bool = False) -> None:
        """Cancel a workflow (with ``cancel_children``, its unfinished descendants too): a
        process running it stops at its next step boundary that reads its status."""
        if self._sysdb.get_status(workflow_id) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        if cancel_children:
            self._sysdb.cancel_tree(workflow_id)
        else:
            self._sysdb.cancel(workflow_id)

    async def cancel_workflow_async(
        self, workflow_id: str, *, cancel_children: bool = False
    ) -> None:
        """Async :meth:`cancel_workflow`."""
        await asyncio.to_thread(self.cancel_workflow, workflow_id, cancel_children=cancel_children)

    def cancel_workflows(self, workflow_ids: list[str], *, cancel_children: bool = False) -> None:
        """Cancel several workflows."""
        for wf_id in workflow_ids:
            self.cancel_workflow(wf_id, cancel_children=cancel_children)

    async def cancel_workflows_async(
        self, workflow_ids: list[str], *, cancel_children: bool = False
    ) -> None:
        """Async :meth:`cancel_workflows`."""
        await asyncio.to_thread(
            self.cancel_workflows, workflow_ids, cancel_children=cancel_children
        )

    def delete_workflows(self, workflow_ids: list[str], *, delete_children: bool = False) -> None:
        """Delete workflows (with ``delete_children``, their descendants) and everything
        recorded about them (an unknown ID is no error)."""
        ids = list(workflow_ids)
        if delete_children:
            ids = _introspect_db.descendants(self._sysdb, ids)
        _introspect_db.delete(self._sysdb, ids)

    async def delete_workflows_async(
        self, workflow_ids: list[str], *, delete_children: bool = False
    ) -> None:
        """Async :meth:`delete_workflows`."""
        await asyncio.to_thread(
            self.delete_workflows, workflow_ids, delete_children=delete_children
        )

    def delete_workflow(self, workflow_id: str, *, delete_children: bool = False) -> None:
        """Delete one workflow (see :meth:`delete_workflows`)."""
        self.delete_workflows([workflow_id], delete_children=delete_children)

    async def delete_workflow_async(
        self, workflow_id: str, *, delete_children: bool = False
    ) -> None:
        """Async :meth:`delete_workflow`."""
        await self.delete_workflows_async([workflow_id], delete_children=delete_children)

    def set_workflow_delay(
        self,
        workflow_id: str,
        *,
        delay_seconds: float | None = None,
        delay_until_epoch_ms: int | None = None,
    ) -> None:
        """Move a DELAYED workflow's due time (one due now enters its queue, for the app's
        worker to take at its next poll); another workflow is left alone, as in DBOS."""
        now = now_ms()
        until = delay_until(now, delay_seconds, delay_until_epoch_ms)
        move_delay(self._sysdb, workflow_id, until, now)

    async def set_workflow_delay_async(
        self,
        workflow_id: str,
        *,
        delay_seconds: float | None = None,
        delay_until_epoch_ms: int | None = None,
    ) -> None:
        """Async :meth:`set_workflow_delay`."""
        await asyncio.to_thread(
            self.set_workflow_delay,
            workflow_id,
            delay_seconds=delay_seconds,
            delay_until_epoch_ms=delay_until_epoch_ms,
        )

    def update_workflow_attributes(
        self, workflow_id: str, attributes: dict[str, Any] | None
    ) -> None:
        """Replace a workflow's custom attributes (None clears them)."""
        replace_attributes(self._sysdb, workflow_id, attributes)

    async def update_workflow_attributes_async(
        self, workflow_id: str, attributes: dict[str, Any] | None
    ) -> None:
        """Async :meth:`update_workflow_attributes`."""
        await asyncio.to_thread(self.update_workflow_attributes, workflow_id, attributes)

    def check_connection(self) -> None:
        """Raise unless the system database answers (after the client's retries)."""
        _ping(self._sysdb)

    async def check_connection_async(self) -> None:
        """Async :meth:`check_connection`."""
        await asyncio.to_thread(self.check_connection)

    # -- application versions --------------------------------------------------------------

    def list_application_versions(self) -> list[VersionInfo]:
        """Every registered version, the latest first."""
        return list_in(self._sysdb)

    async def list_application_versions_async(self) -> list[VersionInfo]:
        """Async :meth:`list_application_versions`."""
        return await asyncio.to_thread(list_in, self._sysdb)

    def get_latest_application_version(self) -> VersionInfo:
        """The latest version (raises when none is registered)."""
        return latest_in(self._sysdb)

    async def get_latest_application_version_async(self) -> VersionInfo:
        """Async :meth:`get_latest_application_version`."""
        return await asyncio.to_thread(latest_in, self._sysdb)

    def set_latest_application_version(
        self, version_name: str, *, application_name: str | None = None
    ) -> None:
        """Make ``version_name`` the latest (registered under ``application_name``, else
        the client's, when it is new)."""
        set_latest_in(self._sysdb, version_name, application_name or self.application_name)

    async def set_latest_application_version_async(
        self, version_name: str, *, application_name: str | None = None
    ) -> None:
        """Async :meth:`set_latest_application_version`."""
        await asyncio.to_thread(
            self.set_latest_application_version, version_name, application_name=application_name
        )

    def rename_application(
        self,
        old_name: str | None,
        new_name: str,
        *,
        batch_size: int | None = 10000,
        adopt_unclaimed_rows: bool = False,
    ) -> Any:
        """Not supported: Spindle records no owning application on its rows."""
        raise DBOSException(
            "DBOSClient.rename_application: Spindle records no owning application on "
            "workflows, steps or schedules, so there are no rows to move"
        )

    async def rename_application_async(
        self,
        old_name: str | None,
        new_name: str,
        *,
        batch_size: int | None = 10000,
        adopt_unclaimed_rows: bool = False,
    ) -> Any:
        """Async :meth:`rename_application` (not supported either)."""
        return self.rename_application(
            old_name, new_name, batch_size=batch_size, adopt_unclaimed_rows=adopt_unclaimed_rows
        )

    # -- queues (declared in the app processes) ---------------------------------------------

    def list_queues(self, *, application_name: str | list[str] | None = None) -> list[Any]:
        """Not supported: see the module (queues live in the app processes)."""
        raise _no_queues("list_queues")

    async def list_queues_async(
        self, *, application_name: str | list[str] | None = None
    ) -> list[Any]:
        """Not supported: see the module."""
        raise _no_queues("list_queues")

    def retrieve_queue(self, name: str) -> Any:
        """Not supported: see the module."""
        raise _no_queues("retrieve_queue")

    async def retrieve_queue_async(self, name: str) -> Any:
        """Not supported: see the module."""
        raise _no_queues("retrieve_queue")

    def register_queue(self, name: str, **options: Any) -> Any:
        """Not supported: see the module."""
        raise _no_queues("register_queue")

    async def register_queue_async(self, name: str, **options: Any) -> Any:
        """Not supported: see the module."""
        raise _no_queues("register_queue")

    def delete_queue(self, name: str) -> None:
        """Not supported: see the module."""
        raise _no_queues("delete_queue")

    async def delete_queue_async(self, name: str) -> None:
        """Not supported: see the module."""
        raise _no_queues("delete_queue")

    # -- sends ------------------------------------------------------------------------------

    def send_bulk(
        self,
        messages: list[SendMessage],
        *,
        serialization_type: Any = None,
        send_to_forks: bool = False,
    ) -> None:
        """Send every message in one transaction (all or none)."""
        _checked_send_options(serialization_type, send_to_forks)
        send_many(self._sysdb, _message_rows(messages, "send_bulk"))

    async def send_bulk_async(
        self,
        messages: list[SendMessage],
        *,
        serialization_type: Any = None,
        send_to_forks: bool = False,
    ) -> None:
        """Async :meth:`send_bulk`."""
        await asyncio.to_thread(
            self.send_bulk,
            messages,
            serialization_type=serialization_type,
            send_to_forks=send_to_forks,
        )

    def send_in_transaction(
        self,
        conn_or_session: Connection | Session,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        *,
        serialization_type: Any = None,
        send_to_forks: bool = False,
    ) -> None:
        """Write a message in the caller's transaction on the system database: it reaches
        the workflow when (and only if) the caller commits."""
        self.send_bulk_in_transaction(
            conn_or_session,
            [SendMessage(destination_id, message, topic, idempotency_key)],
            serialization_type=serialization_type,
            send_to_forks=send_to_forks,
        )

    def send_bulk_in_transaction(
        self,
        conn_or_session: Connection | Session,
        messages: list[SendMessage],
        *,
        serialization_type: Any = None,
        send_to_forks: bool = False,
    ) -> None:
        """Write the messages in the caller's transaction on the system database."""
        _checked_send_options(serialization_type, send_to_forks)
        _txn_writes.send_many(conn_or_session, _message_rows(messages, "send_in_transaction"))

    def enqueue_in_transaction(
        self,
        conn_or_session: Connection | Session,
        options: EnqueueOptions,
        *args: Any,
        **kwargs: Any,
    ) -> WorkflowHandleClient[Any]:
        """Enqueue in the caller's transaction on the system database: the workflow exists
        (and an app's worker may take it) only once the caller commits."""
        return self._handle(_txn_writes.enqueue(conn_or_session, options, args, kwargs))

    # -- a schedule's ticks, for an app to run -----------------------------------------------

    def _schedule(self, schedule_name: str) -> WorkflowSchedule:
        row = ScheduleStore(self._sysdb).get(schedule_name)
        if row is None:
            raise DBOSException(f"schedule {schedule_name!r} does not exist")
        return row

    def _enqueue_tick(self, row: WorkflowSchedule, tick: datetime, workflow_id: str) -> None:
        name = row["workflow_name"]
        # The scheduler's call: (tick, context); an ID already taken is a tick already run.
        insert_enqueued(
            self._sysdb,
            workflow_id=workflow_id,
            name=name,
            inputs=serialize(((tick, row["context"]), {}), f"the inputs of workflow {name!r}"),
            queue_name=INTERNAL_QUEUE_NAME,
            executor_id=CLIENT_EXECUTOR_ID,
            application_version=None,
            parent_workflow_id=None,
            timeout_ms=None,
            deadline_epoch_ms=None,
            deduplication_id=None,
            priority=0,
        )

    def backfill_schedule(
        self, schedule_name: str, start: datetime, end: datetime
    ) -> list[WorkflowHandleClient[None]]:
        """Enqueue every tick of ``[start, end)`` no process started yet on DBOS's internal
        queue, under the live scheduler's IDs (see the module); naive times are UTC."""
        row = self._schedule(schedule_name)
        handles: list[WorkflowHandleClient[None]] = []
        for tick, workflow_id in backfill_ticks(row, start, end):
            self._enqueue_tick(row, tick, workflow_id)
            handles.append(self._handle(workflow_id))
        return handles

    def trigger_schedule(self, schedule_name: str) -> WorkflowHandleClient[None]:
        """Enqueue the schedule's workflow now, outside its cron, on DBOS's internal queue."""
        row = self._schedule(schedule_name)
        now = datetime.now(UTC)
        workflow_id = trigger_workflow_id(schedule_name, now)
        self._enqueue_tick(row, now, workflow_id)
        return self._handle(workflow_id)
