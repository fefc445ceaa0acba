"""``DBOSClient``'s schedule management and ``wait_first`` on both backends: schedules
written by the client are the app's (its dynamic scheduler runs them), by workflow name."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from spindle import DBOS, ClientScheduleInput, DBOSClient, DBOSException, Queue
from spindle.testing import FakeClock
from tests.conftest import MakeDBOS

START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
ran: queue.Queue[tuple[datetime, Any]] = queue.Queue()
cs_queue = Queue("client-sched-queue", polling_interval_sec=0.05)


@DBOS.workflow()
def cs_task(scheduled_time: datetime, context: Any) -> None:
    ran.put((scheduled_time, context))


@DBOS.workflow()
def cs_wait(topic: str) -> Any:
    return DBOS.recv(topic, timeout_seconds=30)


@pytest.fixture
def client(db_url: str) -> Iterator[DBOSClient]:
    made = DBOSClient(system_database_url=db_url, system_database_pool_size=2)
    yield made
    made.destroy()


def test_client_schedule_runs_in_the_app(make_dbos: MakeDBOS, client: DBOSClient) -> None:
    """A schedule the client creates is picked up by the app's dynamic scheduler at its
    next poll and fires on its cron, with its context."""
    clock = FakeClock(START)
    make_dbos(clock=clock).launch()
    client.create_schedule(
        schedule_name="from-client", workflow_name="cs_task", schedule="*/5 * * * * *", context=7
    )
    assert clock.wait_for_waiters(1)  # the dynamic scheduler, waiting for its next poll
    clock.advance(1.0)  # it reads the table and starts the schedule's thread
    assert clock.wait_for_waiters(2)
    clock.advance(4.0)
    assert ran.get(timeout=10) == (datetime.fromtimestamp(START + 5, UTC), 7)


def test_client_schedule_management(dbos: type[DBOS], client: DBOSClient) -> None:
    client.create_schedule(schedule_name="a", workflow_name="cs_task", schedule="0 * * * *")
    with pytest.raises(DBOSException, match="already exists"):
        client.create_schedule(schedule_name="a", workflow_name="cs_task", schedule="0 * * * *")
    with pytest.raises(DBOSException, match="cron_timezone"):
        client.create_schedule(
            schedule_name="z", workflow_name="cs_task", schedule="0 * * * *", cron_timezone="UTC"
        )
    with pytest.raises(DBOSException, match="workflow_class_name"):
        client.create_schedule(
            schedule_name="z",
            workflow_name="cs_task",
            schedule="0 * * * *",
            workflow_class_name="C",
        )
    with pytest.raises((DBOSException, ValueError), match="z"):
        client.create_schedule(schedule_name="z", workflow_name="cs_task", schedule="not cron")
    found = client.get_schedule("a")
    assert found is not None
    assert found["workflow_name"] == "cs_task"
    assert DBOS.get_schedule("a") == found  # the app sees the same row
    client.pause_schedule("a")
    assert [s["schedule_name"] for s in client.list_schedules(status="PAUSED")] == ["a"]
    client.resume_schedule("a")
    with pytest.raises(DBOSException, match="does not exist"):
        client.pause_schedule("nope")
    entries: list[ClientScheduleInput] = [
        {"schedule_name": "a", "workflow_name": "cs_task", "schedule": "*/2 * * * *"},
        {"schedule_name": "b", "workflow_name": "cs_task", "schedule": "0 0 * * *", "context": 1},
    ]
    client.apply_schedules(entries)
    with pytest.raises(DBOSException, match="missing required field 'schedule'"):
        client.apply_schedules([{"schedule_name": "c", "workflow_name": "cs_task"}])

    async def twins() -> list[str]:
        await client.delete_schedule_async("b")
        assert await client.get_schedule_async("b") is None
        return [s["schedule"] for s in await client.list_schedules_async(schedule_name_prefix="a")]

    assert asyncio.run(twins()) == ["*/2 * * * *"]
    client.delete_schedule("a")
    client.delete_schedule("a")  # no-op when missing
    assert client.list_schedules() == []


def test_client_wait_first(dbos: type[DBOS], client: DBOSClient) -> None:
    slow = client.enqueue({"workflow_name": "cs_wait", "queue_name": cs_queue.name}, "never")
    fast = client.enqueue({"workflow_name": "cs_wait", "queue_name": cs_queue.name}, "go")
    client.send(fast.workflow_id, "done", "go")
    first = client.wait_first([slow, fast], polling_interval_sec=0.05)
    assert first is fast
    assert first.get_result() == "done"
    with pytest.raises(ValueError, match="empty"):
        client.wait_first([])
    with pytest.raises(ValueError, match="duplicate"):
        client.wait_first([fast, fast])

    async def go() -> str:
        handles = [await client.retrieve_workflow_async(h.workflow_id) for h in (slow, fast)]
        return (await client.wait_first_async(handles)).workflow_id

    assert asyncio.run(go()) == fast.workflow_id
    client.send(slow.workflow_id, "bye", "never")
    assert slow.get_result() == "bye"
