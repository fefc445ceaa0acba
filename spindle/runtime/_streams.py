"""DBOS's streams: ``write_stream`` / ``close_stream`` in a workflow, ``read_stream`` anywhere.

A workflow appends values to a stream under a key; readers get them in order until the
stream is closed or the workflow is no longer active. A write from the workflow itself is
recorded as its step (``DBOS.writeStream``) in the same transaction as the value, so a
recovered workflow never writes a value twice; a write from inside a step is part of that
step, as in DBOS. On PostgreSQL every value NOTIFYs (migration v7's trigger) and the
notification listener wakes the readers of its stream at once; on SQLite values written
in this process wake them directly and others are polled every
``notification_polling_interval_sec``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ._context import WorkflowContext, current_workflow
from ._db_retry import retried
from ._durable import write_once
from ._errors import DBOSException, DBOSNonExistentWorkflowError
from ._notifications import stream_key
from ._rows import DELAYED, ENQUEUED, PENDING, now_ms
from ._runtime import Runtime
from ._schema import operation_outputs as oo
from ._schema import streams as st
from ._schema import workflow_status as ws
from ._serialization import as_bytes
from ._serializer import WorkflowSerializationFormat
from ._sysdb import SystemDatabase

#: DBOS's value that closes a stream.
CLOSED_SENTINEL = "__DBOS_STREAM_CLOSED__"
_ACTIVE = (PENDING, ENQUEUED, DELAYED)
#: What :func:`next_value` returns at the end of a stream.
END = object()
_NO_VALUE = END


class StreamDB:
    """The stream queries, each in one transaction under the transient-error retry."""

    def __init__(self, sysdb: SystemDatabase) -> None:
        self.sysdb = sysdb
        self.retrier = sysdb.retrier  # what @retried uses

    @staticmethod
    def _append(
        conn: sa.Connection, wf_id: str, key: str, data: bytes, fid: int | None, fmt: str | None
    ) -> None:
        # One writer per stream at a time (the workflow's steps run in order): the next
        # offset is the count so far; a racing writer conflicts on the primary key.
        nxt = conn.execute(
            sa.select(sa.func.count()).where(st.c.workflow_uuid == wf_id, st.c.key == key)
        ).scalar_one()
        conn.execute(
            st.insert().values(
                workflow_uuid=wf_id,
                key=key,
                offset=nxt,
                value=data,
                function_id=fid,
                serialization=fmt,
            )
        )

    @retried
    def write_checkpointed(
        self, wf_id: str, fid: int, key: str, data: bytes, name: str, fmt: str | None = None
    ) -> str:
        """Append the value (``fmt``: its format) and record step ``fid`` in one
        transaction (the write_once outcome: recorded, not-pending or conflict)."""
        try:
            with self.sysdb.transaction() as conn:
                status = conn.execute(
                    sa.select(ws.c.status).where(ws.c.workflow_uuid == wf_id)
                ).scalar_one_or_none()
                if status != PENDING:
                    return "not-pending"
                conn.execute(
                    oo.insert().values(
                        workflow_uuid=wf_id,
                        function_id=fid,
                        function_name=name,
                        output=None,
                        error=None,
                        completed_at=now_ms(),
                    )
                )
                self._append(conn, wf_id, key, data, fid, fmt)
        except IntegrityError:
            return "conflict"  # another execution recorded this step
        return "recorded"

    @retried
    def write_from_step(self, wf_id: str, key: str, data: bytes, fmt: str | None = None) -> None:
        """Append a value written inside a step (the step is the unit that is recorded)."""
        while True:
            try:
                with self.sysdb.transaction() as conn:
                    self._append(conn, wf_id, key, data, None, fmt)
                return
            except IntegrityError:
                continue  # a concurrent append took the offset: take the next one

    @retried
    def read(self, wf_id: str, key: str, offset: int) -> tuple[str | None, Any]:
        """The workflow's status and the value at ``offset`` with its format (``_NO_VALUE``
        when none yet), in one read transaction."""
        with self.sysdb.transaction(read=True) as conn:
            status = conn.execute(
                sa.select(ws.c.status).where(ws.c.workflow_uuid == wf_id)
            ).scalar_one_or_none()
            row = conn.execute(
                sa.select(st.c.value, st.c.serialization).where(
                    st.c.workflow_uuid == wf_id, st.c.key == key, st.c.offset == offset
                )
            ).one_or_none()
        return status, (_NO_VALUE if row is None else (as_bytes(row[0]), row[1]))


def _db(rt: Runtime) -> StreamDB:
    return StreamDB(rt.sysdb)  # two references: cheaper than caching it per launch


def _write(
    rt: Runtime,
    ctx: WorkflowContext | None,
    key: str,
    value: Any,
    what: str,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    if ctx is None:
        raise DBOSException(f"{what}() must be called from within a workflow or step")
    codec = rt.sysdb.codecs.for_type(serialization_type)
    data = codec.encode(value, f"the value of DBOS.{what}")
    fmt = codec.format
    db = _db(rt)
    if ctx.in_step:
        db.write_from_step(ctx.workflow_id, key, data, fmt)
    else:
        name = "DBOS.writeStream" if what == "write_stream" else "DBOS.closeStream"
        if not write_once(
            rt, ctx, lambda fid: db.write_checkpointed(ctx.workflow_id, fid, key, data, name, fmt)
        ):
            return  # written by an earlier execution
    rt.listener.committed(stream_key(ctx.workflow_id, key))


def write_stream(
    rt: Runtime,
    key: str,
    value: Any,
    serialization_type: WorkflowSerializationFormat | None = None,
) -> None:
    """Append ``value`` to this workflow's stream ``key`` (exactly once per execution;
    ``serialization_type``: its format, the application's serializer by default)."""
    rt.require_launched()
    _write(rt, current_workflow.get(), key, value, "write_stream", serialization_type)


def close_stream(rt: Runtime, key: str) -> None:
    """Close this workflow's stream ``key``: its readers stop after the last value."""
    rt.require_launched()
    ctx = current_workflow.get()
    if ctx is None or ctx.in_step:
        raise DBOSException("close_stream() must be called from within a workflow")
    _write(rt, ctx, key, CLOSED_SENTINEL, "close_stream")


def next_value(db: StreamDB, wf_id: str, key: str, offset: int) -> tuple[bool, Any]:
    """``(True, value)``, ``(True, _NO_VALUE)`` at the end, or ``(False, None)``: wait."""
    status, value = db.read(wf_id, key, offset)
    if status is None:
        raise DBOSNonExistentWorkflowError(wf_id)
    codecs = db.sysdb.codecs
    if value is not _NO_VALUE:
        decoded = codecs.decode(*value)
        return True, (_NO_VALUE if decoded == CLOSED_SENTINEL else decoded)
    if status not in _ACTIVE:
        # Ended (or cancelled while writing): read once more so a value committed just
        # before the end is not missed.
        _, value = db.read(wf_id, key, offset)
        if value is _NO_VALUE:
            return True, _NO_VALUE
        decoded = codecs.decode(*value)
        return True, (_NO_VALUE if decoded == CLOSED_SENTINEL else decoded)
    return False, None


def read_stream(rt: Runtime, workflow_id: str, key: str, offset: int = 0) -> Iterator[Any]:
    """The stream's values in order, from ``offset``, until it is closed or its workflow
    is no longer active (waiting between values on the notification listener)."""
    rt.require_launched()
    db = _db(rt)
    waiter = rt.listener.waiters.register(stream_key(workflow_id, key))
    interval = rt.config.notification_polling_interval_sec
    try:
        while True:
            waiter.clear()  # before the read: a value committed after it sets the waiter
            ready, value = next_value(db, workflow_id, key, offset)
            if ready and value is _NO_VALUE:
                return
            if ready:
                yield value
                offset += 1
                continue
            if rt.stopping.is_set():
                raise DBOSException("the runtime shut down while reading a stream")
            # The workflow's end sends no notification: bounded by the polling interval.
            waiter.wait(interval)
    finally:
        rt.listener.waiters.unregister(waiter)


async def read_stream_async(
    rt: Runtime, workflow_id: str, key: str, offset: int = 0
) -> AsyncIterator[Any]:
    """Async :func:`read_stream`: reads run off the loop, waits hold no thread."""
    rt.require_launched()
    db = _db(rt)
    loop = asyncio.get_running_loop()
    waiter = rt.listener.waiters.register(stream_key(workflow_id, key), loop)
    interval = rt.config.notification_polling_interval_sec
    try:
        while True:
            waiter.clear()
            ready, value = await asyncio.to_thread(next_value, db, workflow_id, key, offset)
            if ready and value is _NO_VALUE:
                return
            if ready:
                yield value
                offset += 1
                continue
            if rt.stopping.is_set():
                raise DBOSException("the runtime shut down while reading a stream")
            await waiter.wait_async(interval)
    finally:
        rt.listener.waiters.unregister(waiter)
