"""``@DBOS.transaction`` execution: one application-database transaction, exactly once.

The transaction's output is committed in the same transaction as its checkpoint row (in the
application database), so a replay returns the recorded output and never runs it twice.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ._appdb import ApplicationDatabase
from ._context import current_workflow
from ._core import _check_boundary
from ._errors import DBOSException, WorkflowInterrupted
from ._functions import TransactionInfo
from ._runtime import Runtime
from ._serialization import deserialize, deserialize_exception, serialize, serialize_exception
from ._sysdb_gate import SystemDatabaseClosed


def _transaction_prelude(
    rt: Runtime, info: TransactionInfo
) -> tuple[ApplicationDatabase, str | None, int | None, tuple[Any] | None]:
    """Where a transaction stands: its database, its checkpoint key, and a replayed result."""
    if rt.appdb is None:
        raise DBOSException("@DBOS.transaction needs application_database_url in the config")
    ctx = current_workflow.get()
    if ctx is None or ctx.in_step:
        return rt.appdb, None, None, None
    wf_id, fid = ctx.workflow_id, ctx.next_id()
    if ctx.recorded is not None:
        done = rt.appdb.recorded(wf_id, fid)
        if done is not None:
            if done[1] is not None:
                raise deserialize_exception(done[1])
            return rt.appdb, wf_id, fid, (deserialize(done[0]),)
    _check_boundary(rt, ctx.entry)
    return rt.appdb, wf_id, fid, None


def run_transaction(
    rt: Runtime, info: TransactionInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run a ``@DBOS.transaction`` once: replayed when recorded, else committed with its
    checkpoint in the same transaction."""
    appdb, wf_id, fid, replayed = _transaction_prelude(rt, info)
    if replayed is not None:
        return replayed[0]
    try:
        with _transaction(appdb, info, wf_id, fid) as outcome:
            outcome.value = info.func(*args, **kwargs)
        return outcome.value
    except Exception as exc:
        _transaction_failed(rt, appdb, wf_id, fid, exc)
        raise


async def run_transaction_async(
    rt: Runtime, info: TransactionInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Async :func:`run_transaction`."""
    appdb, wf_id, fid, replayed = _transaction_prelude(rt, info)
    if replayed is not None:
        return replayed[0]
    try:
        # The session is sync: its SQL runs on the loop's thread, as a sync call would.
        with _transaction(appdb, info, wf_id, fid) as outcome:
            outcome.value = await info.func(*args, **kwargs)
        return outcome.value
    except Exception as exc:
        _transaction_failed(rt, appdb, wf_id, fid, exc)
        raise


def _transaction(
    appdb: ApplicationDatabase, info: TransactionInfo, wf_id: str | None, fid: int | None
) -> contextlib.AbstractContextManager[Any]:
    return appdb.transaction(
        workflow_id=wf_id,
        function_id=fid,
        serialize_output=lambda v: serialize(v, f"the output of transaction {info.name!r}"),
        isolation_level=info.isolation_level,
    )


def _transaction_failed(
    rt: Runtime, appdb: ApplicationDatabase, wf_id: str | None, fid: int | None, exc: Exception
) -> None:
    if isinstance(exc, SystemDatabaseClosed):
        raise WorkflowInterrupted() from exc
    if wf_id is not None and fid is not None and not rt.interrupting:
        appdb.record_error(wf_id, fid, serialize_exception(exc))
