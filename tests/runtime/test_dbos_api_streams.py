"""DBOS 2.30's streams on both backends: write/close/read (+ async), readers woken as
values arrive (PostgreSQL: by the notification listener), exactly once under recovery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import DBOS, DBOSException, DBOSNonExistentWorkflowError, SetWorkflowID
from spindle.runtime._schema import streams, workflow_status
from tests.conftest import MakeDBOS

#: Long enough that a reader which was not woken (only polling) would hit the test timeout.
NO_POLLING = {"notification_polling_interval_sec": 60.0}


@DBOS.workflow()
def producer(values: list[Any]) -> int:
    for value in values:
        DBOS.write_stream("out", value)
    DBOS.close_stream("out")
    return len(values)


@DBOS.workflow()
def paced_producer() -> None:
    DBOS.write_stream("out", "first")
    DBOS.recv("go", timeout_seconds=30)
    DBOS.write_stream("out", "second")
    DBOS.close_stream("out")


@DBOS.step()
def writing_step(value: str) -> None:
    DBOS.write_stream("steps", value)


@DBOS.workflow()
def step_writer() -> None:
    writing_step("from a step")  # the workflow ends without closing: readers stop at its end


@DBOS.workflow()
async def async_producer(n: int) -> None:
    for i in range(n):
        await DBOS.write_stream_async("out", i)
    await DBOS.close_stream_async("out")


def _stored(workflow_id: str) -> int:
    with DBOS.runtime.sysdb.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(streams.c.workflow_uuid == workflow_id)
            ).scalar_one()
        )


def test_write_close_read(make_dbos: MakeDBOS) -> None:
    make_dbos(**NO_POLLING).launch()
    with SetWorkflowID("s-1"):
        assert producer([1, {"two": 2}, "three"]) == 3
    assert list(DBOS.read_stream("s-1", "out")) == [1, {"two": 2}, "three"]
    assert list(DBOS.read_stream("s-1", "out", offset=2)) == ["three"]
    assert list(DBOS.read_stream("s-1", "other")) == []  # ended workflow: nothing more
    steps = [s["function_name"] for s in DBOS.list_workflow_steps("s-1")]
    assert steps == ["DBOS.writeStream"] * 3 + ["DBOS.closeStream"]
    with SetWorkflowID("s-step"):
        step_writer()
    assert list(DBOS.read_stream("s-step", "steps")) == ["from a step"]


def test_reader_is_woken_as_values_arrive(make_dbos: MakeDBOS) -> None:
    make_dbos(**NO_POLLING).launch()
    with SetWorkflowID("s-paced"):
        handle = DBOS.start_workflow(paced_producer)
    seen: list[Any] = []
    reader = DBOS.read_stream("s-paced", "out")
    seen.append(next(reader))  # waits for the first value (polling would take 60 s)
    abandoned = DBOS.read_stream("s-paced", "out")
    assert next(abandoned) == "first"
    abandoned.close()  # a reader dropped mid-stream unregisters its waiter
    DBOS.send("s-paced", "now", "go")
    seen.extend(reader)  # the second value, then the close
    assert seen == ["first", "second"]
    handle.get_result()


def test_writes_are_exactly_once_under_recovery(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    with SetWorkflowID("s-rec"):
        producer(["a", "b"])
    with DBOS.runtime.sysdb.engine.begin() as conn:
        conn.execute(
            workflow_status.update()
            .where(workflow_status.c.workflow_uuid == "s-rec")
            .values(status="PENDING", output=None)
        )
    DBOS.destroy()
    DBOS.launch()  # recovery replays the recorded writes
    assert DBOS.retrieve_workflow("s-rec").get_result() == 2
    assert _stored("s-rec") == 3  # two values and the close, once each
    assert list(DBOS.read_stream("s-rec", "out")) == ["a", "b"]


def test_async_streams(make_dbos: MakeDBOS) -> None:
    make_dbos(**NO_POLLING).launch()

    async def run() -> list[Any]:
        with SetWorkflowID("s-async"):
            handle = await DBOS.start_workflow_async(async_producer, 3)
        values = [v async for v in DBOS.read_stream_async("s-async", "out")]
        await handle.get_result()
        return values

    assert asyncio.run(run()) == [0, 1, 2]


def test_stream_errors(dbos: type[DBOS]) -> None:
    with pytest.raises(DBOSException, match="must be called from within a workflow or step"):
        DBOS.write_stream("k", 1)
    with pytest.raises(DBOSException, match="must be called from within a workflow"):
        DBOS.close_stream("k")
    with pytest.raises(DBOSNonExistentWorkflowError):
        next(DBOS.read_stream("missing", "k"))
    # A reader abandoned mid-wait unregisters its waiter.
    reader = DBOS.read_stream("missing", "k")
    with pytest.raises(DBOSNonExistentWorkflowError):
        next(reader)
    waiting = DBOS.runtime.listener.waiters.keys()
    assert not any(k[0] == "stream" for k in waiting)
