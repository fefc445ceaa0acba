"""``list_workflow_steps`` as DBOS lists it, on both backends: a child's start is a step named
as the child with its ID, reading a workflow's result or status inside a workflow is a
``DBOS.getResult`` / ``DBOS.getStatus`` step, every step has a start time, and a replay (a
fork) takes the children it started from those steps instead of running them again."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from spindle import DBOS, EnqueueOptions, Queue, SetWorkflowID
from tests.conftest import MakeDBOS

runs: dict[str, int] = {}
listed_queue = Queue("listed")


@DBOS.workflow()
def listed_child(n: int) -> int:
    runs[f"child:{n}"] = runs.get(f"child:{n}", 0) + 1
    return n


@DBOS.step()
def listed_step() -> int:
    return 100


@DBOS.workflow()
def listed_parent() -> int:
    handle = DBOS.start_workflow(listed_child, 1)  # 1: the child's start
    DBOS.get_workflow_status(handle.workflow_id)  # 2
    again = DBOS.retrieve_workflow(handle.workflow_id)  # 3: getStatus
    first = again.get_result()  # 4
    handle.get_status()  # 5
    with SetWorkflowID(f"{DBOS.workflow_id}-named"):
        second = listed_child(3)  # 6: the start, 7: getResult
    queued = listed_queue.enqueue(listed_child, 5)  # 8
    third = queued.get_result()  # 9
    return int(first + second + third + listed_step())  # 10


@DBOS.workflow()
async def listed_async_parent() -> int:
    direct = await listed_async_child(7)  # 1: the start, 2: getResult
    handle = await DBOS.start_workflow_async(listed_async_child, 8)  # 3
    return int(direct + await handle.get_result())  # 4


@DBOS.workflow()
async def listed_async_child(n: int) -> int:
    await asyncio.sleep(0)
    return n


def _shape(workflow_id: str) -> list[tuple[int, str, str | None]]:
    return [
        (s["function_id"], s["function_name"], s["child_workflow_id"])
        for s in DBOS.list_workflow_steps(workflow_id)
    ]


def test_children_results_and_statuses_are_steps_numbered_as_dbos_numbers_them(
    make_dbos: MakeDBOS,
) -> None:
    """The sequence DBOS 2.30 records for the same workflow (observed side by side)."""
    make_dbos().launch()
    runs.clear()
    with SetWorkflowID("lister"):
        assert listed_parent() == 1 + 3 + 5 + 100
    assert _shape("lister") == [
        (1, "listed_child", "lister-1"),
        (2, "DBOS.getStatus", None),
        (3, "DBOS.getStatus", None),
        (4, "DBOS.getResult", "lister-1"),
        (5, "DBOS.getStatus", None),
        (6, "listed_child", "lister-named"),
        (7, "DBOS.getResult", "lister-named"),
        (8, "listed_child", "lister-8"),
        (9, "DBOS.getResult", "lister-8"),
        (10, "listed_step", None),
    ]
    steps = DBOS.list_workflow_steps("lister")
    assert [s["output"] for s in steps if s["function_name"] == "DBOS.getResult"] == [1, 3, 5]
    for s in steps:
        started, completed = s["started_at_epoch_ms"], s["completed_at_epoch_ms"]
        assert started is not None
        assert completed is not None
        assert started <= completed


def test_an_async_parent_records_its_children_the_same_way(make_dbos: MakeDBOS) -> None:
    """Async twins: a direct await and a started child's handle both record getResult."""
    make_dbos().launch()
    with SetWorkflowID("async-lister"):
        assert asyncio.run(listed_async_parent()) == 15
    assert _shape("async-lister") == [
        (1, "listed_async_child", "async-lister-1"),
        (2, "DBOS.getResult", "async-lister-1"),
        (3, "listed_async_child", "async-lister-3"),
        (4, "DBOS.getResult", "async-lister-3"),
    ]


def test_a_fork_after_the_children_reuses_them_and_their_results(make_dbos: MakeDBOS) -> None:
    """Forked past its children, a workflow reads them from the copied steps: none runs
    again, not even under the fork's own ID."""
    make_dbos().launch()
    runs.clear()
    with SetWorkflowID("fork-lister"):
        expected = listed_parent()
    assert runs == {"child:1": 1, "child:3": 1, "child:5": 1}
    forked = DBOS.fork_workflow("fork-lister", 10)
    assert forked.get_result() == expected
    assert runs == {"child:1": 1, "child:3": 1, "child:5": 1}
    shape = _shape(forked.workflow_id)
    assert shape[0] == (1, "listed_child", "fork-lister-1")
    assert shape[-1] == (10, "listed_step", None)


def test_a_fork_before_a_child_starts_a_new_one(make_dbos: MakeDBOS) -> None:
    """Forked at a child's start, the fork starts its own child under its own ID."""
    make_dbos().launch()
    runs.clear()
    with SetWorkflowID("refork-lister"):
        listed_parent()
    forked = DBOS.fork_workflow("refork-lister", 8)
    forked.get_result()
    assert runs == {"child:1": 1, "child:3": 1, "child:5": 2}
    assert (8, "listed_child", f"{forked.workflow_id}-8") in _shape(forked.workflow_id)


@DBOS.step()
def starts_one() -> str:
    return DBOS.start_workflow(listed_child, 9).workflow_id


@DBOS.workflow()
def listed_step_parent() -> Any:
    return starts_one()


def test_a_step_that_starts_a_workflow_records_no_child_step(make_dbos: MakeDBOS) -> None:
    """Inside a step, a started workflow is the step's business: the step is the one row."""
    make_dbos().launch()
    with SetWorkflowID("step-lister"):
        child = listed_step_parent()
    assert DBOS.retrieve_workflow(child).get_result() == 9
    assert [name for _, name, _ in _shape("step-lister")] == ["starts_one"]


@DBOS.transaction()
def listed_tx(n: int) -> int:
    return int(DBOS.sql_session.execute(sa.text("SELECT :n"), {"n": n}).scalar_one())


@DBOS.workflow()
def listed_tx_parent() -> int:
    return listed_tx(4) + listed_step()


def test_a_transaction_is_a_step_of_its_workflow(make_dbos: MakeDBOS, app_db_url: str) -> None:
    """As in DBOS, a transaction's outcome is listed (and replayed) from the workflow's steps,
    with the time it began."""
    make_dbos(application_database_url=app_db_url).launch()
    with SetWorkflowID("tx-lister"):
        assert listed_tx_parent() == 104
    steps = DBOS.list_workflow_steps("tx-lister")
    assert [(s["function_id"], s["function_name"], s["output"]) for s in steps] == [
        (1, "listed_tx", 4),
        (2, "listed_step", 100),
    ]
    started, completed = steps[0]["started_at_epoch_ms"], steps[0]["completed_at_epoch_ms"]
    assert started is not None
    assert completed is not None
    assert started <= completed
    forked = DBOS.fork_workflow("tx-lister", 2)
    assert forked.get_result() == 104


@DBOS.workflow()
def listed_by_name_parent() -> int:
    handle = DBOS.enqueue_workflow_with_options(
        EnqueueOptions(workflow_name="listed_child", queue_name="listed"), 6
    )  # 1: the start, as a queue's enqueue
    return int(handle.get_result())  # 2


def test_an_enqueue_by_name_is_a_child_start_too(make_dbos: MakeDBOS) -> None:
    """``enqueue_workflow_with_options`` inside a workflow records the child's start, as a
    queue's ``enqueue`` does (dbos 2.30.0 lists it as step 1)."""
    make_dbos().launch()
    with SetWorkflowID("by-name-lister"):
        assert listed_by_name_parent() == 6
    assert _shape("by-name-lister") == [
        (1, "listed_child", "by-name-lister-1"),
        (2, "DBOS.getResult", "by-name-lister-1"),
    ]
