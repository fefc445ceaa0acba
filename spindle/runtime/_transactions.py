"""Running ``@DBOS.transaction`` functions: the durable-operation protocol on the app database.

A transaction's checkpoint lives in the application database, committed in the same
transaction as its work, so its replay reads that table instead of the workflow's steps
(and only when the workflow is being replayed: a new workflow never reads to look).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ._context import current_workflow
from ._durable import Call, Host, Op, check_boundary, drive
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
        with appdb.transaction(
            workflow_id=wf_id,
            function_id=fid,
            serialize_output=lambda v: serialize(v, f"the output of transaction {info.name!r}"),
            isolation_level=info.isolation_level,
        ) as outcome:
            outcome.value = yield Call(info.func, args, kwargs)
        return outcome.value
    except Exception as exc:
        failure = exc
        _failed(rt, appdb, wf_id, fid, exc)
        raise
    finally:
        if spans is not None:
            spans.end(span, failure)


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
