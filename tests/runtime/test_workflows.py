"""Workflows, steps and transactions on both backends: checkpoints, replay, errors."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import (
    DBOS,
    DBOSException,
    DBOSMaxStepRetriesExceeded,
    DBOSNonExistentWorkflowError,
    DBOSSerializationError,
    SetWorkflowID,
    WorkflowHandle,
)
from tests.conftest import MakeDBOS

calls: dict[str, int] = {}


def bump(key: str) -> None:
    calls[key] = calls.get(key, 0) + 1


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


@DBOS.step()
def double(x: int) -> int:
    bump(f"double:{x}")
    return x * 2


@DBOS.workflow()
def three_steps(x: int) -> int:
    return double(x) + double(x + 1) + double(x + 2)


flaky_failures: list[int] = []


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.001, backoff_rate=1.0)
def flaky(fail_times: int) -> str:
    flaky_failures.append(1)
    if len(flaky_failures) <= fail_times:
        raise ConnectionError(f"attempt {len(flaky_failures)} failed")
    return "ok"


@DBOS.workflow()
def flaky_workflow(fail_times: int) -> str:
    flaky_failures.clear()
    return flaky(fail_times)


@DBOS.workflow()
def failing_workflow(msg: str) -> None:
    raise ValueError(msg)


@DBOS.step()
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    bump(f"adouble:{x}")
    return x * 2


@DBOS.workflow()
async def async_workflow(x: int) -> int:
    a = await async_double(x)
    await DBOS.sleep_async(0.001)
    return a + await async_double(x + 1)


def test_workflow_runs_steps_and_records_them(dbos: type[DBOS]) -> None:
    """A workflow's result, status and every step's output are durable."""
    assert three_steps(1) == 2 + 4 + 6
    handle = DBOS.start_workflow(three_steps, 10)
    assert handle.get_result() == 20 + 22 + 24
    status = handle.get_status()
    assert status.status == "SUCCESS"
    assert status.output == 66
    assert status.input == ((10,), {})
    assert status.name == "three_steps"
    steps = DBOS.runtime.sysdb.step_outputs(handle.workflow_id)
    assert sorted(steps) == [1, 2, 3]
    assert {s.function_name for s in steps.values()} == {"double"}


def test_same_workflow_id_returns_recorded_result(dbos: type[DBOS]) -> None:
    """Calling a workflow again with the same ID returns the recorded result, running nothing."""
    with SetWorkflowID("order-42"):
        assert three_steps(5) == 10 + 12 + 14
    before = dict(calls)
    with SetWorkflowID("order-42"):
        assert three_steps(5) == 36
    with SetWorkflowID("order-42"):
        assert DBOS.start_workflow(three_steps, 5).get_result() == 36
    assert calls == before


def test_step_retries_then_succeeds(dbos: type[DBOS]) -> None:
    """A retried step runs until it succeeds within max_attempts."""
    assert flaky_workflow(2) == "ok"
    assert len(flaky_failures) == 3


def test_step_retries_exhausted(dbos: type[DBOS]) -> None:
    """After max_attempts failures the workflow fails with DBOSMaxStepRetriesExceeded."""
    handle = DBOS.start_workflow(flaky_workflow, 5)
    with pytest.raises(DBOSMaxStepRetriesExceeded):
        handle.get_result()
    assert handle.get_status().status == "ERROR"
    assert len(flaky_failures) == 3


def test_workflow_error_is_recorded_and_reraised(dbos: type[DBOS]) -> None:
    """A failing workflow is ERROR with its exception, raised again from its handle."""
    handle = DBOS.start_workflow(failing_workflow, "boom")
    with pytest.raises(ValueError, match="boom"):
        handle.get_result()
    status = DBOS.retrieve_workflow(handle.workflow_id).get_status()
    assert status.status == "ERROR"
    assert isinstance(status.error, ValueError)
    with pytest.raises(ValueError, match="boom"):
        DBOS.retrieve_workflow(handle.workflow_id).get_result()


def test_unserializable_input_raises_and_writes_nothing(dbos: type[DBOS]) -> None:
    """A bad input raises a clear error before any row is written."""
    with pytest.raises(DBOSSerializationError, match="inputs of workflow 'three_steps'"):
        DBOS.start_workflow(three_steps, threading.Lock())
    assert DBOS.list_workflows() == []


@DBOS.step()
def returns_lock() -> Any:
    return threading.Lock()


@DBOS.workflow()
def bad_output_workflow() -> Any:
    return returns_lock()


def test_unserializable_step_output_fails_the_workflow(dbos: type[DBOS]) -> None:
    """A step output that cannot be checkpointed fails the workflow with a clear error."""
    handle = DBOS.start_workflow(bad_output_workflow)
    with pytest.raises(DBOSSerializationError, match="output of step 'returns_lock'"):
        handle.get_result()
    assert handle.get_status().status == "ERROR"
    assert DBOS.runtime.sysdb.step_outputs(handle.workflow_id) == {}


def test_async_workflow_runs_on_the_background_loop(dbos: type[DBOS]) -> None:
    """An async workflow started from sync code runs on dbos-event-loop."""
    handle: WorkflowHandle[Any] = DBOS.start_workflow(async_workflow, 3)
    assert handle.get_result() == 6 + 8
    assert handle.get_status().status == "SUCCESS"


def test_async_workflow_awaited_from_a_running_loop(dbos: type[DBOS]) -> None:
    """Awaited from a running loop, an async workflow runs on that loop."""

    async def main() -> int:
        handle = await DBOS.start_workflow_async(async_workflow, 1)
        direct = await async_workflow(2)
        return int(await handle.get_result()) + direct

    assert asyncio.run(main()) == (2 + 4) + (4 + 6)


def test_retrieve_unknown_workflow_raises(dbos: type[DBOS]) -> None:
    """Unknown IDs raise DBOSNonExistentWorkflowError."""
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.retrieve_workflow("nope")
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.cancel_workflow("nope")


def test_list_workflows_filters(dbos: type[DBOS]) -> None:
    """list_workflows filters by status, name, time range and limit."""
    for i in range(3):
        three_steps(i)
    with pytest.raises(ValueError, match="x"):
        failing_workflow("x")
    everything = DBOS.list_workflows()
    assert len(everything) == 4
    assert [w.status for w in DBOS.list_workflows(status="ERROR")] == ["ERROR"]
    assert len(DBOS.list_workflows(name="three_steps")) == 3
    assert len(DBOS.list_workflows(limit=2)) == 2
    newest = DBOS.list_workflows(sort_desc=True, limit=1)[0]
    assert newest.name == "failing_workflow"
    assert DBOS.list_workflows(start_time="2999-01-01T00:00:00+00:00") == []
    assert len(DBOS.list_workflows(end_time="2999-01-01T00:00:00+00:00")) == 4
    with pytest.raises(ValueError, match="start_time"):
        DBOS.list_workflows(start_time="yesterday")


@DBOS.transaction()
def insert_row(value: str) -> int:
    session = DBOS.sql_session
    session.execute(sa.text("INSERT INTO items(value) VALUES (:v)"), {"v": value})
    return int(session.execute(sa.text("SELECT count(*) FROM items")).scalar_one())


@DBOS.workflow()
def transaction_workflow(value: str) -> int:
    return insert_row(value)


def test_transaction_runs_exactly_once(make_dbos: MakeDBOS, app_db_url: str) -> None:
    """A transaction commits with its checkpoint; the same workflow ID does not rerun it."""
    make_dbos(application_database_url=app_db_url).launch()
    engine = sa.create_engine(app_db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (value TEXT)")
    try:
        with SetWorkflowID("tx-1"):
            assert transaction_workflow("a") == 1
        with SetWorkflowID("tx-1"):
            assert transaction_workflow("a") == 1
        assert transaction_workflow("b") == 2
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM items").scalar_one() == 2
    finally:
        engine.dispose()


def test_async_transaction_is_rejected() -> None:
    """As DBOS: @DBOS.transaction() on an async def raises at decoration."""

    async def insert_row_async(value: str) -> int:
        return 0

    with pytest.raises(DBOSException, match=r"is a coroutine function, but DBOS\.transaction"):
        DBOS.transaction()(insert_row_async)


def test_transaction_outside_a_workflow_is_a_temporary_workflow(
    make_dbos: MakeDBOS, app_db_url: str
) -> None:
    """Called outside a workflow, a transaction runs in a <temp>.<name> workflow (as DBOS):
    recorded and listed; SetWorkflowID makes it run once."""
    make_dbos(application_database_url=app_db_url).launch()
    engine = sa.create_engine(app_db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (value TEXT)")
    try:
        for _ in range(2):
            with SetWorkflowID("tmp-tx"):
                assert insert_row("a") == 1
        (temp,) = DBOS.list_workflows(name="<temp>.insert_row")
        assert (temp.workflow_id, temp.status, temp.output) == ("tmp-tx", "SUCCESS", 1)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM items").scalar_one() == 1
    finally:
        engine.dispose()
