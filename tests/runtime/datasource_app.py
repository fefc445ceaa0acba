"""A small app for the datasource crash test: run as a child process, a datasource
transaction commits, and the process says READY and blocks before the workflow records its
step, so the parent's kill -9 lands in the one window only ``datasource_outputs`` covers."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from spindle import DBOS, AsyncSQLAlchemyDatasource, SetWorkflowID, SQLAlchemyDatasource
from tests.runtime.recovery_app import log_effect

#: The datasources of this process, by mode ("sync", "async"); the parent fills its own.
SOURCES: dict[str, Any] = {}
LEDGER_DDL = "CREATE TABLE ledger (account TEXT, amount INTEGER)"
INSERT = sa.text("INSERT INTO ledger(account, amount) VALUES (:a, :m)")
BALANCE = sa.text("SELECT sum(amount) FROM ledger WHERE account = :a")


def crash_credit(account: str, amount: int) -> int:
    """Credit the account (an effect logged each time the body runs); the new balance."""
    log_effect(f"credit:{account}")
    session = SOURCES["sync"].sql_session()
    session.execute(INSERT, {"a": account, "m": amount})
    return int(session.execute(BALANCE, {"a": account}).scalar_one())


async def crash_credit_async(account: str, amount: int) -> int:
    """Async :func:`crash_credit`."""
    log_effect(f"credit:{account}")
    session = SOURCES["async"].sql_session()
    await session.execute(INSERT, {"a": account, "m": amount})
    return int((await session.execute(BALANCE, {"a": account})).scalar_one())


@DBOS.workflow()
def ds_crash_workflow(account: str) -> int:
    """One datasource transaction."""
    return int(SOURCES["sync"].run_tx_step({"name": "credit"}, crash_credit, account, 5))


@DBOS.workflow()
async def ds_crash_workflow_async(account: str) -> int:
    """One async datasource transaction."""
    source = SOURCES["async"]
    return int(await source.run_tx_step_async({"name": "credit"}, crash_credit_async, account, 5))


def block_after_the_commit(engine: sa.Engine) -> None:
    """Once a datasource_outputs row was inserted, the connection's return to the pool (after
    its commit) says READY and blocks for good: the step is never recorded."""
    inserted = threading.Event()

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT") and "datasource_outputs" in statement:
            inserted.set()

    def returned(dbapi_connection: Any, record: Any) -> None:
        if inserted.is_set():
            print("READY", flush=True)
            threading.Event().wait()

    sa.event.listen(engine, "after_cursor_execute", seen)
    sa.event.listen(engine, "checkin", returned)


async def _run_async(app_url: str) -> None:
    source = await AsyncSQLAlchemyDatasource.create(app_url, engine_kwargs={"poolclass": NullPool})
    SOURCES["async"] = source
    async with source.engine.begin() as conn:
        await conn.exec_driver_sql(LEDGER_DDL)
    block_after_the_commit(source.engine.sync_engine)
    with SetWorkflowID("ds-crash"):
        await ds_crash_workflow_async("acct")


def main() -> None:
    """``datasource_app <system url> <app url> <sync|async>``."""
    system_url, app_url, mode = sys.argv[1:4]
    DBOS(config={"name": "ds-crash", "system_database_url": system_url, "run_admin_server": False})
    DBOS.launch()
    if mode == "async":
        asyncio.run(_run_async(app_url))
        return
    source = SQLAlchemyDatasource.create(app_url)
    SOURCES["sync"] = source
    with source.engine.begin() as conn:
        conn.exec_driver_sql(LEDGER_DDL)
    block_after_the_commit(source.engine)
    with SetWorkflowID("ds-crash"):
        ds_crash_workflow("acct")


if __name__ == "__main__":
    main()
