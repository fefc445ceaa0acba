"""DBOS 2.30's schedule additions on both backends: @DBOS.scheduled after launch, on a
step, apply_schedules, the _async twins, refused options, naive datetimes in backfill."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from spindle import DBOS, DBOSException
from spindle.runtime._pollers import POLLERS
from spindle.testing import FakeClock
from tests.conftest import MakeDBOS

START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
fired: queue.Queue[tuple[str, datetime]] = queue.Queue()


@pytest.fixture(autouse=True)
def _fresh_pollers() -> Iterator[None]:
    POLLERS.clear()
    yield
    POLLERS.clear()


@DBOS.step()
def sched_step(scheduled_time: datetime, actual_time: datetime) -> None:
    fired.put(("step", scheduled_time))


@DBOS.workflow()
def sched_task(scheduled_time: datetime, context: Any) -> Any:
    return context


def test_scheduled_after_launch_starts_at_once(make_dbos: MakeDBOS) -> None:
    """@DBOS.scheduled applied after launch() starts its thread at once; on a step it runs
    the step's temporary workflow <temp>.<name>, as DBOS."""
    clock = FakeClock(START)
    make_dbos(clock=clock).launch()
    DBOS.scheduled("*/5 * * * * *")(sched_step)
    names = {t.name for t in DBOS.thread_registry.snapshot().threads if t.state.alive}
    assert "dbos-scheduler[<temp>.sched_step]" in names
    assert clock.wait_for_waiters(2)  # the new poller and the dynamic scheduler
    clock.advance(5.0)
    tick = datetime.fromtimestamp(START + 5, UTC)
    assert fired.get(timeout=10) == ("step", tick)
    run = DBOS.retrieve_workflow(f"sched-<temp>.sched_step-{tick.isoformat()}")
    assert run.get_result() is None
    (step,) = DBOS.list_workflow_steps(run.workflow_id)
    assert step["function_name"] == "sched_step"


def test_apply_schedules_and_async_twins(dbos: type[DBOS]) -> None:
    """apply_schedules creates or replaces all at once; the _async twins agree; DBOS's
    options Spindle does not implement are refused, never ignored."""
    DBOS.create_schedule(schedule_name="a", workflow_fn=sched_task, schedule="0 * * * *")
    DBOS.apply_schedules(
        [
            {"schedule_name": "a", "workflow_fn": sched_task, "schedule": "30 * * * *"},
            {
                "schedule_name": "b",
                "workflow_fn": sched_task,
                "schedule": "0 0 * * *",
                "context": 7,
            },
        ]
    )
    schedules = {s["schedule_name"]: s for s in DBOS.list_schedules()}
    assert (schedules["a"]["schedule"], schedules["b"]["context"]) == ("30 * * * *", 7)
    with pytest.raises(DBOSException, match="missing required field 'schedule'"):
        DBOS.apply_schedules([{"schedule_name": "c", "workflow_fn": sched_task}])
    with pytest.raises(DBOSException, match="cron_timezone"):
        DBOS.create_schedule(
            schedule_name="tz", workflow_fn=sched_task, schedule="0 * * * *", cron_timezone="UTC"
        )

    async def main() -> Any:
        await DBOS.create_schedule_async(
            schedule_name="c", workflow_fn=sched_task, schedule="0 * * * *"
        )
        got = await DBOS.get_schedule_async("c")
        await DBOS.delete_schedule_async("a")
        return got, [s["schedule_name"] for s in await DBOS.list_schedules_async()]

    got, names = asyncio.run(main())
    assert got is not None
    assert got["schedule_name"] == "c"
    assert (got["workflow_class_name"], got["automatic_backfill"], got["cron_timezone"]) == (
        None,
        False,
        None,
    )
    assert names == ["b", "c"]


def test_backfill_treats_naive_datetimes_as_utc(dbos: type[DBOS]) -> None:
    """backfill_schedule with naive datetimes takes them as UTC (as DBOS): the IDs are the
    live scheduler's, so an aware backfill of the same hours starts nothing new."""
    DBOS.create_schedule(
        schedule_name="hourly", workflow_fn=sched_task, schedule="0 * * * *", context="c"
    )
    naive = DBOS.backfill_schedule("hourly", datetime(2026, 1, 1, 0, 30), datetime(2026, 1, 1, 3))
    aware = DBOS.backfill_schedule(
        "hourly", datetime(2026, 1, 1, 0, 30, tzinfo=UTC), datetime(2026, 1, 1, 3, tzinfo=UTC)
    )
    assert [h.workflow_id for h in naive] == [h.workflow_id for h in aware]
    assert naive[0].workflow_id.endswith("2026-01-01T01:00:00+00:00")
    assert [h.get_result() for h in naive] == ["c", "c"]
    assert len(DBOS.list_workflows(name="sched_task")) == 2
