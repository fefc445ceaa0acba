"""``DBOS.send`` / ``recv`` / ``set_event`` / ``get_event``: durable messages and events.

Inside a workflow each call is a durable operation of ``_durable``: take a function id,
replay the recorded output if there is one, else check the boundary (cancel, shutdown), act,
and record. ``send`` and ``set_event`` record their checkpoint in the write's own
transaction. ``recv`` and ``get_event`` take a second function id for their timeout,
checkpointed like ``DBOS.sleep``, so a recovered workflow waits only for what is left of it.

The waiting loops are written once, as operations that yield ``Wait(waiter, seconds)``;
``_durable.drive`` blocks on the waiter's event, ``drive_async`` awaits it on the loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ._context import WorkflowContext, current_workflow
from ._durable import (
    Op,
    Wait,
    begin,
    check_boundary,
    deadline,
    drive,
    drive_async,
    record,
    replay,
    settle,
    write_once,
)
from ._errors import (
    DBOSException,
    DBOSRuntimeShutdownError,
    WorkflowInterrupted,
)
from ._messaging_db import NULL_TOPIC
from ._notifications import event_key, message_key
from ._serialization import serialize
from ._serializer import WorkflowSerializationFormat
from ._sysdb_gate import SystemDatabaseClosed

if TYPE_CHECKING:
    from ._runtime import Runtime

_NONE = serialize(None, "None")


def _workflow_ctx() -> WorkflowContext | None:
    """The context of the calling workflow, or None outside one (and inside a step)."""
    ctx = current_workflow.get()
    return None if ctx is None or ctx.in_step else ctx


def _check_wake(rt: Runtime, ctx: WorkflowContext | None) -> None:
    """Raise if the caller must stop waiting: its workflow was cancelled or interrupted, or
    the listener is gone (shutdown)."""
    if ctx is not None:
        check_boundary(rt, ctx.entry)
    if rt.listener.waiters.closed:
        if ctx is not None:
            # Never an error recorded on the workflow: it stays PENDING for recovery.
            raise WorkflowInterrupted()
        raise DBOSRuntimeShutdownError("the runtime shut down while waiting for a notification")


# -- send ---------------------------------------------------------------------------------


def send(
    rt: Runtime,
    destination_id: str,
    message: Any,
    topic: str | None,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    """Send ``message`` to a workflow, exactly once even when the sender is replayed
    (``serialization_type``: its format; the application's serializer by default)."""
    rt.require_launched()
    topic_s = NULL_TOPIC if topic is None else topic
    codec = rt.sysdb.codecs.for_type(serialization_type)
    data = codec.encode(message, "the message of DBOS.send")
    fmt = codec.format
    ctx = _workflow_ctx()
    if ctx is None:
        rt.messaging_db.send(destination_id, topic_s, data, serialization=fmt)
    elif not write_once(
        rt,
        ctx,
        lambda fid: rt.messaging_db.send(
            destination_id,
            topic_s,
            data,
            workflow_id=ctx.workflow_id,
            function_id=fid,
            serialization=fmt,
        ),
    ):
        return  # sent by an earlier execution: its commit already woke the receiver
    rt.listener.committed(message_key(destination_id, topic_s))


async def send_async(
    rt: Runtime,
    destination_id: str,
    message: Any,
    topic: str | None,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    """Async :func:`send` (one short transaction, run on the caller's loop)."""
    send(rt, destination_id, message, topic, serialization_type)


# -- recv ---------------------------------------------------------------------------------


def _recv(
    rt: Runtime, topic: str | None, timeout: float, loop: asyncio.AbstractEventLoop | None
) -> Op[Any]:
    ctx = _workflow_ctx()
    if ctx is None:
        raise DBOSException("DBOS.recv() must be called from within a workflow")
    rt.require_launched()
    topic_s = NULL_TOPIC if topic is None else topic
    fid, row = begin(rt, ctx, ids=2)
    if row is not None:
        return replay(row, rt.sysdb.codecs)
    timeout_fid = fid + 1
    db = rt.messaging_db
    # Register before the first read: a message committed after the read wakes us.
    waiter = rt.listener.waiters.register(message_key(ctx.workflow_id, topic_s), loop)
    remove_wake = ctx.entry.add_wake_callback(waiter.notify)
    try:
        wake_at: float | None = None
        while True:
            # Clear, then check everything a wake-up may mean (a row, a cancel, shutdown): a
            # wake-up that lands before the clear is then seen by a check, never lost.
            waiter.clear()
            _check_wake(rt, ctx)
            try:
                got = db.consume(ctx.workflow_id, fid, topic_s)
            except SystemDatabaseClosed as exc:
                raise WorkflowInterrupted() from exc
            if got.outcome == "recorded":
                return rt.sysdb.codecs.decode(got.message, got.serialization)
            if got.outcome != "empty":
                other = settle(rt, ctx, fid, got.outcome)
                return replay(other, rt.sysdb.codecs) if other is not None else None
            if wake_at is None:
                # Checkpointed only when we must wait: a message already there costs one
                # transaction, not two.
                wake_at = deadline(rt, ctx, timeout_fid, timeout)
            remaining = wake_at - rt.clock.now()
            if remaining <= 0:
                break
            yield Wait(waiter, remaining, rt.clock)
    finally:
        remove_wake()
        rt.listener.waiters.unregister(waiter)
    # Timed out (after a last read): None is the step's recorded output.
    other = record(rt, ctx, fid, "DBOS.recv", output=_NONE, error=None)
    return replay(other, rt.sysdb.codecs) if other is not None else None


def recv(rt: Runtime, topic: str | None, timeout_seconds: float) -> Any:
    """Receive the oldest message on ``topic``, or None after ``timeout_seconds``."""
    return drive(_recv(rt, topic, timeout_seconds, None))


async def recv_async(rt: Runtime, topic: str | None, timeout_seconds: float) -> Any:
    """Async :func:`recv`: waits on the loop, holding no thread."""
    return await drive_async(_recv(rt, topic, timeout_seconds, asyncio.get_running_loop()))


# -- events -------------------------------------------------------------------------------


def set_event(
    rt: Runtime,
    key: str,
    value: Any,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    """Set (or overwrite) an event of the calling workflow; wakes its ``get_event`` callers."""
    ctx = current_workflow.get()
    if ctx is None:
        raise DBOSException("DBOS.set_event() must be called from within a workflow")
    rt.require_launched()
    codec = rt.sysdb.codecs.for_type(serialization_type)
    data = codec.encode(value, f"the value of event {key!r}")
    fmt = codec.format
    db = rt.messaging_db
    if ctx.in_step:
        # Inside a step the step is the checkpoint; the upsert is idempotent on a retry.
        db.set_event(ctx.workflow_id, key, data, function_id=None, serialization=fmt)
    elif not write_once(
        rt,
        ctx,
        lambda fid: db.set_event(ctx.workflow_id, key, data, function_id=fid, serialization=fmt),
    ):
        return  # set by an earlier execution, which woke its readers
    rt.listener.committed(event_key(ctx.workflow_id, key))


async def set_event_async(
    rt: Runtime,
    key: str,
    value: Any,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    """Async :func:`set_event`."""
    set_event(rt, key, value, serialization_type)


def _get_event(
    rt: Runtime, workflow_id: str, key: str, timeout: float, loop: asyncio.AbstractEventLoop | None
) -> Op[Any]:
    rt.require_launched()
    ctx = _workflow_ctx()
    fid = timeout_fid = 0
    if ctx is not None:
        fid, row = begin(rt, ctx, ids=2)
        if row is not None:
            return replay(row, rt.sysdb.codecs)
        timeout_fid = fid + 1
    db = rt.messaging_db
    waiter = rt.listener.waiters.register(event_key(workflow_id, key), loop)
    remove_wake = ctx.entry.add_wake_callback(waiter.notify) if ctx is not None else None
    value: tuple[bytes, str | None] | None = None
    try:
        wake_at: float | None = None
        while True:
            waiter.clear()
            _check_wake(rt, ctx)  # after the clear, as in _recv
            try:
                value = db.get_event(workflow_id, key)
            except SystemDatabaseClosed as exc:
                if ctx is not None:
                    raise WorkflowInterrupted() from exc
                raise
            if value is not None:
                break
            if wake_at is None:
                wake_at = (
                    deadline(rt, ctx, timeout_fid, timeout)
                    if ctx is not None
                    else rt.clock.now() + timeout
                )
            remaining = wake_at - rt.clock.now()
            if remaining <= 0:
                break
            yield Wait(waiter, remaining, rt.clock)
    finally:
        if remove_wake is not None:
            remove_wake()
        rt.listener.waiters.unregister(waiter)
    if ctx is not None:
        # The value as read is the step's output: a replay returns it without reading.
        other = record(
            rt,
            ctx,
            fid,
            "DBOS.getEvent",
            output=value[0] if value is not None else _NONE,
            error=None,
            serialization=value[1] if value is not None else None,
        )
        if other is not None:
            return replay(other, rt.sysdb.codecs)
    return None if value is None else rt.sysdb.codecs.decode(*value)


def get_event(rt: Runtime, workflow_id: str, key: str, timeout_seconds: float) -> Any:
    """The value of a workflow's event, waiting up to ``timeout_seconds`` for it to be set."""
    return drive(_get_event(rt, workflow_id, key, timeout_seconds, None))


async def get_event_async(rt: Runtime, workflow_id: str, key: str, timeout_seconds: float) -> Any:
    """Async :func:`get_event`: waits on the loop, holding no thread."""
    loop = asyncio.get_running_loop()
    return await drive_async(_get_event(rt, workflow_id, key, timeout_seconds, loop))
