"""Running ``@DBOS.transaction`` functions: the durable-operation protocol on the app database.

A transaction's checkpoint lives in the application database, committed in the same
transaction as its work, so its replay reads that table instead of the workflow's steps
(and only when the workflow is being replayed: a new workflow never reads to look).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ._context import current_workflow
from ._db_retry import backoff, is_transient
from ._durable import Call, Host, Op, WaitWake, check_boundary, drive
from ._errors import DBOSException, WorkflowInterrupted
from ._serialization import deserialize, deserialize_exception, serialize, serialize_exception
from ._sysdb_gate import SystemDatabaseClosed

if TYPE_CHECKING:
    from ._appdb import ApplicationDatabase
    from ._functions import TransactionInfo


class TransactionHost(Host, Protocol):
    """What transactions read of the runtime, beyond the protocol's needs."""

    @property
    def appdb(self) -> ApplicationDatabase | None: ...


def run_transaction(
    rt: TransactionHost, info: TransactionInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run a sync transaction, exactly once per workflow across replays."""
    return drive(_transaction(rt, info, args, kwargs))


def _transaction(
    rt: TransactionHost, info: TransactionInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Op[Any]:
    appdb = rt.appdb
    if appdb is None:
        raise DBOSException("@DBOS.transaction needs application_database_url in the config")
    ctx = current_workflow.get()
    wf_id: str | None = None
    fid: int | None = None
    if ctx is not None and not ctx.in_step:
        wf_id, fid = ctx.workflow_id, ctx.next_id()
        if ctx.recorded is not None:
            done = appdb.recorded(wf_id, fid)
            if done is not None:
                if done[1] is not None:
                    raise deserialize_exception(done[1])
                return deserialize(done[0])
        check_boundary(rt, ctx.entry)
    spans = getattr(rt, "op_tracer", None)
    span = (
        spans.start(info.name, "transaction", wf_id)
        if spans is not None and wf_id is not None
        else None
    )
    failure: BaseException | None = None
    try:
        attempt = 0
        while True:
            try:
                with appdb.transaction(
                    workflow_id=wf_id,
                    function_id=fid,
                    serialize_output=lambda v: serialize(
                        v, f"the output of transaction {info.name!r}"
                    ),
                    isolation_level=info.isolation_level,
                ) as outcome:
                    outcome.value = yield Call(info.func, args, kwargs)
                if attempt:
                    appdb.retrier.note_recovered()
                return outcome.value
            except Exception as exc:
                if ctx is None or wf_id is None or fid is None or not _retryable(rt, exc):
                    _failed(rt, appdb, wf_id, fid, exc)
                    raise
                transient = exc
            # A lost connection, a serialization failure, a deadlock: the transaction rolled
            # back (or committed with its checkpoint, and only the answer was lost), so it
            # runs again once its checkpoint says it did not commit. Never its outcome.
            attempt += 1
            appdb.retrier.note_failure(transient)
            if (yield WaitWake(ctx.entry, backoff(attempt))):
                check_boundary(rt, ctx.entry)
            try:
                done = appdb.recorded(wf_id, fid)
            except Exception as exc:
                if not _retryable(rt, exc):
                    raise
                continue  # still down: back off again
            if done is not None:
                appdb.retrier.note_recovered()
                if done[1] is not None:
                    raise deserialize_exception(done[1])
                return deserialize(done[0])
    except Exception as exc:
        failure = exc
        raise
    finally:
        if spans is not None:
            spans.end(span, failure)


def _retryable(rt: TransactionHost, exc: BaseException) -> bool:
    return not rt.interrupting and not isinstance(exc, SystemDatabaseClosed) and is_transient(exc)


def _failed(
    rt: TransactionHost,
    appdb: ApplicationDatabase,
    wf_id: str | None,
    fid: int | None,
    exc: Exception,
) -> None:
    if isinstance(exc, SystemDatabaseClosed):
        raise WorkflowInterrupted() from exc
    # Never recorded during shutdown: the workflow stays PENDING and its recovery retries.
    if wf_id is not None and fid is not None and not rt.interrupting:
        appdb.record_error(wf_id, fid, serialize_exception(exc))
