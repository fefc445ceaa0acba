"""One application-database transaction around a user's function, with its checkpoint row.

Shared by ``@DBOS.transaction`` (:mod:`._appdb`) and the datasources (:mod:`._datasource`,
:mod:`._datasource_async`): the function runs with a SQLAlchemy session bound to the
transaction's connection, and the checkpoint row is inserted in the same transaction, so the
function's writes and the record that it ran commit together or not at all.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from ._durable import Call

#: Values of the checkpoint row, given the function's result (None: no checkpoint).
Checkpoint = tuple[sa.Table, Callable[[Any], dict[str, Any]]]


class AlreadyRecorded(Exception):
    """The checkpoint's key was taken: another execution of the workflow committed this
    operation first (this transaction rolled back; the recorded outcome wins)."""


def isolated(engine: Any, isolation_level: str | None, *, sqlite: bool) -> Any:
    """``engine`` with the isolation level applied (SQLite's transactions are always
    serializable, and its driver knows no other level by these names: left as it is)."""
    if isolation_level is None or sqlite:
        return engine
    return engine.execution_options(isolation_level=isolation_level)


#: How the function's session joins the transaction (SQLAlchemy's ``join_transaction_mode``).
#: ``create_savepoint``: the function's commit() or rollback() ends a savepoint only, so the
#: checkpoint still commits with what it kept; right only where the engine itself begins
#: the transaction (Spindle's application database). On an engine left to pysqlite's own
#: transaction control, the outermost SAVEPOINT *is* the transaction and its release
#: commits the function's writes without the checkpoint: there ``rollback_only``, where a
#: commit() by the function only flushes.
JoinMode = Literal["create_savepoint", "rollback_only"]


def run_sync(
    engine: sa.Engine,
    call: Call,
    session_var: contextvars.ContextVar[Session | None],
    checkpoint: Checkpoint | None,
    join: JoinMode,
) -> Any:
    """``call`` in one transaction of ``engine`` with a session in ``session_var``, then the
    checkpoint row; raises :class:`AlreadyRecorded` when that row exists already."""
    with engine.begin() as conn:
        session = Session(bind=conn, join_transaction_mode=join)
        token = session_var.set(session)
        try:
            value = call.run()
            session.commit()
        finally:
            session_var.reset(token)
            session.close()
        if checkpoint is not None:
            table, values = checkpoint
            try:
                conn.execute(table.insert().values(**values(value)))
            except IntegrityError as exc:
                raise AlreadyRecorded() from exc
    return value


async def run_async(
    engine: AsyncEngine,
    call: Call,
    session_var: contextvars.ContextVar[AsyncSession | None],
    checkpoint: Checkpoint | None,
    join: JoinMode,
) -> Any:
    """Async :func:`run_sync`: the coroutine ``call`` awaited inside the transaction."""
    async with engine.begin() as conn:
        session = AsyncSession(bind=conn, join_transaction_mode=join)
        token = session_var.set(session)
        try:
            value = await call.run_async()
            await session.commit()
        finally:
            session_var.reset(token)
            await session.close()
        if checkpoint is not None:
            table, values = checkpoint
            try:
                await conn.execute(table.insert().values(**values(value)))
            except IntegrityError as exc:
                raise AlreadyRecorded() from exc
    return value
