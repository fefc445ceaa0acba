"""The transactional operation: the durable-operation protocol for a function that runs in
one transaction of the application's own database and commits its checkpoint there.

``@DBOS.transaction`` (its checkpoint table ``transaction_outputs``) and the datasources
(``datasource_outputs``) share it; each is a :class:`TxStore` that answers with effects, so
the one generator below runs sync (:func:`._durable.drive`) and async
(:func:`._durable.drive_async`). Inside a workflow:

1. take the function id; on a replay return what was recorded: the workflow's step (a
   datasource records one in the system database too), else the store's own checkpoint;
2. run the function and insert the checkpoint in one transaction;
3. a transient error (a lost connection, a serialization failure) rolled the transaction
   back, or committed it with its checkpoint and lost only the answer: the checkpoint
   settles which before the function may run again, so it never runs twice after a commit
   landed; an error of the function itself is recorded as its outcome.

Outside a workflow (or inside a step, whose own checkpoint covers it) the function just runs
in a transaction, again when the database rolled it back (serialization failure, deadlock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._context import WorkflowContext, current_workflow
from ._db_retry import Retrier, backoff, is_rollback, is_transient
from ._durable import Call, Effect, Host, Op, WaitWake, begin, check_boundary, conclude, replay
from ._errors import WorkflowInterrupted
from ._rows import now_ms
from ._sql_tx import AlreadyRecorded
from ._sysdb_gate import SystemDatabaseClosed

if TYPE_CHECKING:
    from ._op_spans import OperationTracer


@dataclass(frozen=True, slots=True)
class Done:
    """A transaction's outcome: its value, or the error the function raised."""

    value: Any
    error: BaseException | None

    def result(self) -> Any:
        """The value, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.value


class TxStore(Protocol):
    """An application database that runs transactions and keeps their checkpoints."""

    @property
    def retrier(self) -> Retrier:
        """Counts and logs the transient failures the operation retries."""
        ...

    def transact(
        self, call: Call, name: str, key: tuple[str, int] | None, isolation: str | None
    ) -> Effect:
        """Run ``call`` (the transaction ``name``) in one transaction, with the checkpoint
        under ``key`` (None: none); raises :class:`AlreadyRecorded` if the key was taken."""
        ...

    def lookup(self, workflow_id: str, function_id: int) -> Effect:
        """The recorded :class:`Done` under the key, or None."""
        ...

    def record_error(self, workflow_id: str, function_id: int, error: BaseException) -> Effect:
        """Record the function's error under the key (its own transaction rolled back)."""
        ...


class Thunk(Effect):
    """A store's database work as an effect: ``sync()`` on the calling thread, or the
    awaitable ``async_()`` on the running loop (each store gives the one it can do)."""

    __slots__ = ("async_", "sync")

    def __init__(
        self,
        sync: Callable[[], Any] | None = None,
        async_: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.sync = sync
        self.async_ = async_

    def run(self) -> Any:
        """The sync work (a sync store's operations are only ever driven by ``drive``)."""
        assert self.sync is not None, "an async store's work driven sync"
        return self.sync()

    def run_async(self) -> Awaitable[Any]:
        """The async work (an async store's operations only by ``drive_async``)."""
        assert self.async_ is not None, "a sync store's work driven async"
        return self.async_()


class Pause(Effect):
    """Back off on the caller's own thread or loop (outside a workflow: no wake event)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self) -> None:
        """Block for the backoff (the caller's thread, never a runtime thread's body)."""
        time.sleep(self.seconds)

    def run_async(self) -> Awaitable[None]:
        """Await the backoff on the running loop."""
        return asyncio.sleep(self.seconds)


def transactional(
    rt: Host | None,
    store: TxStore,
    name: str,
    call: Call,
    isolation: str | None,
) -> Op[Any]:
    """Run ``call`` as the transaction ``name``, exactly once per workflow across replays.

    The outcome is also checkpointed as the workflow's step in the system database, as DBOS
    does: ``list_workflow_steps`` shows it, and a replay reads it there. The store's own
    checkpoint, committed with the work, settles a crash between the two.
    """
    ctx = current_workflow.get()
    if rt is None or ctx is None or ctx.in_step:
        return (yield from _unrecorded(rt, store, call, name, isolation, ctx))
    wf_id = ctx.workflow_id
    fid, row = begin(rt, ctx)
    if row is not None:
        return replay(row, rt.sysdb.codecs)
    # Only a workflow running again reads to look: a new one has recorded nothing. begin()
    # checked the boundary; the lookup may have waited, so it is checked again after it.
    if ctx.recorded is not None:
        done: Done | None = yield from _lookup(rt, ctx, store, fid, 0)
        if done is not None:
            return conclude(rt, ctx, fid, name, done.value, done.error)
        check_boundary(rt, ctx.entry)
    started_at = now_ms()
    spans: OperationTracer | None = getattr(rt, "op_tracer", None)
    span = spans.start(name, "transaction", wf_id) if spans is not None else None
    failure: BaseException | None = None
    try:
        done = yield from _run(rt, ctx, store, call, name, isolation, fid)
        failure = done.error
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if spans is not None:
            spans.end(span, failure)
    return conclude(rt, ctx, fid, name, done.value, done.error, started_at=started_at)


def _unrecorded(
    rt: Host | None,
    store: TxStore,
    call: Call,
    name: str,
    isolation: str | None,
    ctx: WorkflowContext | None,
) -> Op[Any]:
    attempt = 0
    while True:
        try:
            return (yield store.transact(call, name, None, isolation))
        except Exception as exc:
            # Only an error that certainly rolled back: after a lost connection the commit
            # may have landed, and with no checkpoint nothing could tell.
            if not is_rollback(exc):
                raise
        attempt += 1
        if rt is not None and ctx is not None:
            # Inside a step: cancel and shutdown cut the backoff short.
            if (yield WaitWake(ctx.entry, backoff(attempt))):
                check_boundary(rt, ctx.entry)
        else:
            yield Pause(backoff(attempt))


def _retryable(rt: Host, exc: BaseException) -> bool:
    return not rt.interrupting and not isinstance(exc, SystemDatabaseClosed) and is_transient(exc)


def _run(
    rt: Host,
    ctx: WorkflowContext,
    store: TxStore,
    call: Call,
    name: str,
    isolation: str | None,
    fid: int,
) -> Op[Done]:
    wf_id = ctx.workflow_id
    attempt = 0
    while True:
        try:
            value = yield store.transact(call, name, (wf_id, fid), isolation)
        except AlreadyRecorded:
            pass  # another execution committed this id first: read its outcome below
        except Exception as exc:
            if isinstance(exc, SystemDatabaseClosed):
                raise WorkflowInterrupted() from exc
            if not _retryable(rt, exc):
                if rt.interrupting:
                    # Never recorded during shutdown: the workflow stays PENDING and its
                    # recovery runs the transaction again.
                    raise
                other = yield from _record_error(rt, ctx, store, fid, exc)
                return other if other is not None else Done(None, exc)
            attempt += 1
            store.retrier.note_failure(exc)
            if (yield WaitWake(ctx.entry, backoff(attempt))):
                check_boundary(rt, ctx.entry)
        else:
            if attempt:
                store.retrier.note_recovered()
            return Done(value, None)
        # Rolled back, or committed with its checkpoint and only the answer lost: the
        # checkpoint says which before the function may run again.
        done = yield from _lookup(rt, ctx, store, fid, attempt)
        if done is not None:
            store.retrier.note_recovered()
            return done


def _lookup(
    rt: Host, ctx: WorkflowContext, store: TxStore, fid: int, attempt: int
) -> Op[Done | None]:
    """The store's recorded outcome (or None), asked until the database answers."""
    while True:
        try:
            found: Done | None = yield store.lookup(ctx.workflow_id, fid)
            return found
        except Exception as exc:
            attempt += 1
            yield from _back_off(rt, ctx, store, exc, attempt)


def _record_error(
    rt: Host, ctx: WorkflowContext, store: TxStore, fid: int, error: Exception
) -> Op[Done | None]:
    """Record the function's error, until the database answers; another execution's
    outcome when it recorded first."""
    attempt = 0
    while True:
        try:
            yield store.record_error(ctx.workflow_id, fid, error)
            return None
        except AlreadyRecorded:
            done: Done | None = yield from _lookup(rt, ctx, store, fid, attempt)
            return done
        except Exception as exc:
            attempt += 1
            yield from _back_off(rt, ctx, store, exc, attempt)


def _back_off(
    rt: Host, ctx: WorkflowContext, store: TxStore, exc: Exception, attempt: int
) -> Op[None]:
    """After a failed statement that must be retried until the database answers: raise what
    is not transient (a closed system database interrupts the workflow), else count the
    failure and back off on the workflow's wake event (cancel and shutdown cut it short)."""
    if isinstance(exc, SystemDatabaseClosed):
        raise WorkflowInterrupted() from exc
    if not _retryable(rt, exc):
        raise exc
    store.retrier.note_failure(exc)
    if (yield WaitWake(ctx.entry, backoff(attempt))):
        check_boundary(rt, ctx.entry)
