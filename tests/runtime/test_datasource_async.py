"""AsyncSQLAlchemyDatasource on both backends (psycopg async, aiosqlite), and exactly-once
across a kill -9 after a datasource transaction committed (sync and async)."""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from spindle import (
    DBOS,
    AsyncSQLAlchemyDatasource,
    DBOSException,
    SetWorkflowID,
    SQLAlchemyDatasource,
)
from spindle.runtime._datasource import sync_url
from spindle.runtime._datasource_async import async_url
from spindle.runtime._sysdb_engine import ensure_postgres_database
from tests.conftest import MakeDBOS
from tests.runtime import datasource_app
from tests.runtime.test_recovery import _run_child_until_ready

RUNS: collections.Counter[str] = collections.Counter()
HOLD: dict[str, AsyncSQLAlchemyDatasource] = {}


@pytest.fixture
def ds_url(app_db_url: str) -> str:
    """The application database's URL, the database created (a datasource creates none)."""
    if not app_db_url.startswith("sqlite"):
        ensure_postgres_database(app_db_url)
    return app_db_url


@pytest.fixture
def ads(ds_url: str) -> Iterator[AsyncSQLAlchemyDatasource]:
    """An async datasource with a ``ledger`` table; no pooled connection outlives the loop
    that opened it (workflows run on the runtime's loop, the test on its own)."""
    RUNS.clear()

    async def make() -> AsyncSQLAlchemyDatasource:
        source = await AsyncSQLAlchemyDatasource.create(
            ds_url, engine_kwargs={"poolclass": NullPool}
        )
        async with source.engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE ledger (account TEXT, amount INTEGER)")
        return source

    source = asyncio.run(make())
    HOLD["ads"] = source
    yield source
    HOLD.clear()
    asyncio.run(source.engine.dispose())


async def credit_async(account: str, amount: int) -> int:
    """Insert a ledger row through the async session; the account's new balance."""
    RUNS["credit"] += 1
    session = HOLD["ads"].sql_session()
    await session.execute(
        sa.text("INSERT INTO ledger(account, amount) VALUES (:a, :m)"), {"a": account, "m": amount}
    )
    result = await session.execute(
        sa.text("SELECT sum(amount) FROM ledger WHERE account = :a"), {"a": account}
    )
    return int(result.scalar_one())


async def overdraw_async(account: str) -> int:
    """Write, then fail: the write rolls back with the transaction."""
    RUNS["overdraw"] += 1
    await (
        HOLD["ads"]
        .sql_session()
        .execute(sa.text("INSERT INTO ledger(account, amount) VALUES (:a, -1)"), {"a": account})
    )
    raise ValueError(f"{account} would be overdrawn")


@DBOS.step()
async def ads_marker_step() -> str:
    """A step after the transactions, so a fork can start after them."""
    return "marked"


@DBOS.workflow()
async def ads_ledger_workflow(account: str) -> tuple[int, str, str]:
    """An async datasource transaction, a failing one (caught), then a step."""
    source = HOLD["ads"]
    balance = await source.run_tx_step_async({"name": "credit"}, credit_async, account, 10)
    try:
        await source.run_tx_step_async(None, overdraw_async, account)
        failure = "none"
    except ValueError as exc:
        failure = str(exc)
    return balance, failure, await ads_marker_step()


def _ledger(source: AsyncSQLAlchemyDatasource) -> list[tuple[str, int]]:
    async def read() -> list[tuple[str, int]]:
        async with source.engine.connect() as conn:
            result = await conn.exec_driver_sql("SELECT account, amount FROM ledger")
            rows: list[tuple[Any, ...]] = [tuple(row) for row in result.all()]
        return [(str(row[0]), int(row[1])) for row in rows]

    return asyncio.run(read())


def test_async_transactions_commit_with_their_record_and_replay_without_running(
    make_dbos: MakeDBOS, ads: AsyncSQLAlchemyDatasource
) -> None:
    """The async twin: write and record commit together, the error's write rolls back, both
    are steps; a fork after them replays output and error without running either."""
    make_dbos().launch()

    async def first() -> tuple[int, str, str]:
        with SetWorkflowID("ads-ledger"):
            return await ads_ledger_workflow("hal")

    assert asyncio.run(first()) == (10, "hal would be overdrawn", "marked")
    assert _ledger(ads) == [("hal", 10)]
    steps = DBOS.list_workflow_steps("ads-ledger")
    assert [s["function_name"] for s in steps] == ["credit", "overdraw_async", "ads_marker_step"]
    assert isinstance(steps[1]["error"], ValueError)
    with SetWorkflowID("ads-fork"):
        handle = DBOS.fork_workflow("ads-ledger", 3)
    assert handle.get_result() == (10, "hal would be overdrawn", "marked")
    assert RUNS == {"credit": 1, "overdraw": 1}


def test_async_outside_a_workflow_runs_at_the_isolation_level_asked(
    ads: AsyncSQLAlchemyDatasource,
) -> None:
    """Outside a workflow the async transaction just runs (PostgreSQL at the level asked);
    sql_session outside one raises; a sync function is refused at decoration."""

    async def level() -> str:
        query = (
            "PRAGMA read_uncommitted"
            if ads.sqlite
            else "SELECT current_setting('transaction_isolation')"
        )
        return str((await ads.sql_session().execute(sa.text(query))).scalar_one())

    @ads.transaction(isolation_level="REPEATABLE READ")
    async def deposit(account: str) -> int:
        return await credit_async(account, 2)

    async def run() -> tuple[str, int]:
        seen = await ads.run_tx_step_async({"isolation_level": "READ COMMITTED"}, level)
        return seen, await deposit("ivy")

    assert asyncio.run(run()) == ("0" if ads.sqlite else "read committed", 2)
    assert _ledger(ads) == [("ivy", 2)]
    with pytest.raises(DBOSException, match="within an async datasource transaction"):
        ads.sql_session()

    def sync_deposit() -> int:
        return 0

    with pytest.raises(DBOSException, match="SQLAlchemyDatasource for sync"):
        ads.transaction(sync_deposit)


def test_async_urls_get_their_asyncio_drivers() -> None:
    """A URL without a driver gets psycopg's async one or aiosqlite; one with a driver stays."""
    assert async_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert async_url("sqlite:///x.sqlite") == "sqlite+aiosqlite:///x.sqlite"
    assert async_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


# -- exactly once across a crash ------------------------------------------------------------


def _steps_recorded(system_url: str, workflow_id: str) -> int:
    table = "operation_outputs" if system_url.startswith("sqlite") else "dbos.operation_outputs"
    url = system_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(f"SELECT count(*) FROM {table} WHERE workflow_uuid = :w")
            return int(conn.execute(query, {"w": workflow_id}).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_transaction_committed_before_a_kill_9_is_not_run_again_by_recovery(
    make_dbos: MakeDBOS,
    db_url: str,
    ds_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """A child commits a datasource transaction and is killed before its step is recorded;
    recovery in this process settles the step from datasource_outputs: the function body
    ran once, its write is there once, and the workflow returns the recorded output."""
    effects = tmp_path / "effects.log"
    env = dict(os.environ, SPINDLE_EFFECTS=str(effects))
    _run_child_until_ready("tests.runtime.datasource_app", [db_url, ds_url, mode], env)
    assert _steps_recorded(db_url, "ds-crash") == 0  # the kill landed in the window

    monkeypatch.setenv("SPINDLE_EFFECTS", str(effects))
    if mode == "sync":
        source: SQLAlchemyDatasource | AsyncSQLAlchemyDatasource = SQLAlchemyDatasource.create(
            ds_url
        )
    else:
        source = asyncio.run(
            AsyncSQLAlchemyDatasource.create(ds_url, engine_kwargs={"poolclass": NullPool})
        )
    datasource_app.SOURCES[mode] = source
    try:
        make_dbos(name="ds-crash").launch()  # recovers the child's PENDING workflow
        assert DBOS.retrieve_workflow("ds-crash").get_result() == 5
        steps = DBOS.list_workflow_steps("ds-crash")
        assert [(s["function_name"], s["output"]) for s in steps] == [("credit", 5)]
        assert effects.read_text().split() == ["credit:acct"]
        check = sa.create_engine(sync_url(ds_url))
        with check.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM ledger").scalar_one() == 1
        check.dispose()
    finally:
        datasource_app.SOURCES.clear()
        if isinstance(source, SQLAlchemyDatasource):
            source.engine.dispose()
        else:
            asyncio.run(source.engine.dispose())


@DBOS.workflow()
async def ads_taken_workflow(account: str) -> int:
    """One async transaction, whose checkpoint key another execution took first."""
    return await HOLD["ads"].run_tx_step_async({"name": "credit"}, credit_async, account, 9)


def test_async_a_taken_checkpoint_rolls_the_writes_back_and_returns_the_recorded_output(
    make_dbos: MakeDBOS, ads: AsyncSQLAlchemyDatasource
) -> None:
    """The async twin: the writes and the failed checkpoint insert are one transaction."""

    async def take() -> None:
        async with ads.engine.begin() as conn:
            await conn.execute(
                ads.outputs.insert().values(
                    workflow_id="ads-taken",
                    step_id=1,
                    output=ads.serializer.serialize(42),
                    serialization=ads.serializer.name(),
                )
            )

    async def run() -> int:
        with SetWorkflowID("ads-taken"):
            return await ads_taken_workflow("jo")

    asyncio.run(take())
    make_dbos().launch()
    assert asyncio.run(run()) == 42
    assert RUNS["credit"] == 1
    assert _ledger(ads) == []
