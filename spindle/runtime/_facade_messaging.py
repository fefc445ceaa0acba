"""``DBOS``'s messaging names of DBOS 2.30 beyond send/recv: ``send(idempotency_key=)``,
``send_bulk`` and ``get_all_events``, as a base class of the facade.

A send from a workflow is exactly once already (its checkpoint commits with the message).
A send from outside a workflow with an ``idempotency_key`` runs as a small durable workflow
whose ID is ``<key>::<destination>``, as DBOS's temporary send workflow: a second send with
the same key finds that workflow finished and sends nothing, even after the message was
received, and one interrupted by a crash is recovered like any workflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import _current, _introspection, _messaging
from ._bulk_send import send_many
from ._context import current_workflow, next_workflow_id
from ._core import prepare_workflow
from ._durable import call, write_once
from ._errors import DBOSException
from ._functions import GLOBAL_REGISTRY, WorkflowInfo
from ._handles import WorkflowHandle
from ._messaging_db import NULL_TOPIC
from ._notifications import message_key
from ._runtime import Runtime
from ._serializer import WorkflowSerializationFormat


@dataclass(frozen=True, slots=True)
class SendMessage:
    """One message of ``DBOS.send_bulk`` (DBOS's ``SendMessage``)."""

    destination_id: str
    message: Any
    topic: str | None = None
    idempotency_key: str | None = None


def _temp_send(
    destination_id: str,
    message: Any,
    topic: str | None,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    _messaging.send(_current.get(), destination_id, message, topic, serialization_type)


#: DBOS's name for its temporary send workflow.
TEMP_SEND_WORKFLOW = "<temp>.temp_send_workflow"
_TEMP_SEND = WorkflowInfo(TEMP_SEND_WORKFLOW, _temp_send, False, None)
GLOBAL_REGISTRY.add_workflow(_TEMP_SEND)


def _send_once(
    rt: Runtime,
    key: str,
    destination_id: str,
    message: Any,
    topic: str | None,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    # destroy(destroy_registry=True) clears the registry; this workflow must stay runnable.
    GLOBAL_REGISTRY.workflows.setdefault(TEMP_SEND_WORKFLOW, _TEMP_SEND)
    # The key names this workflow: a SetWorkflowID around the send is for the caller's next
    # workflow, not for it.
    token = next_workflow_id.set(None)
    try:
        start = prepare_workflow(
            rt,
            _TEMP_SEND,
            (destination_id, message, topic),
            {} if serialization_type is None else {"serialization_type": serialization_type},
            workflow_id=f"{key}::{destination_id}",
        )
    finally:
        next_workflow_id.reset(token)
    if start.run is not None and start.entry.claim():
        start.run()
        return
    WorkflowHandle[None](rt, start.entry.workflow_id, start.entry).get_result()


def _outside_workflow() -> bool:
    ctx = current_workflow.get()
    return ctx is None or ctx.in_step


def send(
    rt: Runtime,
    destination_id: str,
    message: Any,
    topic: str | None,
    idempotency_key: str | None,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    """``DBOS.send``: exactly once from a workflow, or per idempotency key from outside."""
    if idempotency_key is not None and _outside_workflow():
        rt.require_launched()
        _send_once(rt, idempotency_key, destination_id, message, topic, serialization_type)
        return
    _messaging.send(rt, destination_id, message, topic, serialization_type)


def send_bulk(rt: Runtime, messages: Sequence[SendMessage]) -> None:
    """``DBOS.send_bulk``: every message in one transaction; from a workflow, exactly once."""
    rt.require_launched()
    keys = [m.idempotency_key for m in messages if m.idempotency_key]
    if len(keys) != len(set(keys)):
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        raise DBOSException(
            f"send_bulk received duplicate idempotency keys: {', '.join(duplicates)}"
        )
    codec = rt.sysdb.codecs.app
    fmt = codec.format
    rows = [
        (
            m.destination_id,
            NULL_TOPIC if m.topic is None else m.topic,
            codec.encode(m.message, "a message of DBOS.send_bulk"),
        )
        for m in messages
    ]
    ctx = current_workflow.get()
    if ctx is not None and not ctx.in_step:
        if not write_once(
            rt,
            ctx,
            lambda fid: send_many(
                rt.sysdb, rows, workflow_id=ctx.workflow_id, function_id=fid, serialization=fmt
            ),
        ):
            return  # sent by an earlier execution
    else:
        keyed = [m for m in messages if m.idempotency_key is not None]
        plain = [row for row, m in zip(rows, messages, strict=True) if m.idempotency_key is None]
        if plain:
            send_many(rt.sysdb, plain, serialization=fmt)
        # Outside a workflow a keyed message is sent once per key, by its own small
        # workflow: so these are not in the one transaction of the others.
        for m in keyed:
            assert m.idempotency_key is not None
            _send_once(rt, m.idempotency_key, m.destination_id, m.message, m.topic)
    for dest, topic, _ in rows:
        rt.listener.committed(message_key(dest, topic))


class MessagingAPI:
    """The messaging classmethods of ``DBOS``."""

    @classmethod
    def send(
        cls,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
        serialization_type: WorkflowSerializationFormat
        | None = WorkflowSerializationFormat.DEFAULT,
    ) -> None:
        """Send a message to a workflow: exactly once from a workflow (even replayed), and
        once per ``idempotency_key`` from outside one (``serialization_type``: the message's
        format, the application's serializer by default)."""
        send(_current.get(), destination_id, message, topic, idempotency_key, serialization_type)

    @classmethod
    async def send_async(
        cls,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
        serialization_type: WorkflowSerializationFormat
        | None = WorkflowSerializationFormat.DEFAULT,
    ) -> None:
        """Async :meth:`send` (short transactions, run on the caller's loop)."""
        send(_current.get(), destination_id, message, topic, idempotency_key, serialization_type)

    @classmethod
    def send_bulk(cls, messages: list[SendMessage]) -> None:
        """Send many messages in one transaction (a missing destination sends none)."""
        send_bulk(_current.get(), messages)

    @classmethod
    async def send_bulk_async(cls, messages: list[SendMessage]) -> None:
        """Async :meth:`send_bulk`."""
        send_bulk(_current.get(), messages)

    @classmethod
    def get_all_events(cls, workflow_id: str) -> dict[str, Any]:
        """Every event ``workflow_id`` has set, by key (recorded as a step in a workflow)."""
        rt = _current.get()
        return call(rt, "DBOS.getAllEvents", _introspection.all_events, rt, workflow_id)

    @classmethod
    async def get_all_events_async(cls, workflow_id: str) -> dict[str, Any]:
        """Async :meth:`get_all_events`."""
        return cls.get_all_events(workflow_id)
