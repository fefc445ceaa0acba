"""The schedule API behind ``DBOS.create_schedule`` and its neighbours.

Schedules live in the system database (``_schedules.ScheduleStore``); the dynamic scheduler
runs them. These calls change the table and tell the scheduler at once, and start ticks
outside the cron (backfill, trigger) with the scheduler's own workflow IDs, so a tick never
runs twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from ._core import prepare_workflow
from ._cron import tick_workflow_id, trigger_workflow_id
from ._errors import DBOSException
from ._functions import GLOBAL_REGISTRY
from ._runtime import Runtime
from ._schedules import (
    ScheduleStore,
    StoredContext,
    WorkflowSchedule,
    encode_context,
    validate_new_schedule,
)
from ._workflows import dispatch, workflow_info


def create_schedule(
    rt: Runtime, schedule_name: str, workflow_fn: Callable[..., Any], schedule: str, context: Any
) -> None:
    """Store a cron schedule; raises if one with this name exists."""
    rt.require_launched()
    info = workflow_info(workflow_fn)
    validate_new_schedule(schedule_name, info.name, schedule)
    data = encode_context(rt.sysdb.codecs, schedule_name, context)
    if not ScheduleStore(rt.sysdb).create(schedule_name, info.name, schedule, data):
        raise DBOSException(f"schedule {schedule_name!r} already exists")
    rt.schedules_changed()


def list_schedules(
    rt: Runtime,
    status: str | list[str] | None,
    workflow_name: str | list[str] | None,
    schedule_name_prefix: str | list[str] | None,
) -> list[WorkflowSchedule]:
    """The stored schedules, optionally filtered."""
    rt.require_launched()
    return ScheduleStore(rt.sysdb).list(
        status=status, workflow_name=workflow_name, schedule_name_prefix=schedule_name_prefix
    )


def get_schedule(rt: Runtime, name: str) -> WorkflowSchedule | None:
    """One schedule by name, or None."""
    rt.require_launched()
    return ScheduleStore(rt.sysdb).get(name)


def delete_schedule(rt: Runtime, name: str) -> None:
    """Delete a schedule (no-op if missing); its thread stops within one poll."""
    rt.require_launched()
    ScheduleStore(rt.sysdb).delete(name)
    rt.schedules_changed()


def set_schedule_status(rt: Runtime, name: str, status: str) -> None:
    """Pause or resume a schedule."""
    rt.require_launched()
    if not ScheduleStore(rt.sysdb).set_status(name, status):
        raise DBOSException(f"schedule {name!r} does not exist")
    rt.schedules_changed()


def _schedule_start(rt: Runtime, row: WorkflowSchedule, tick: datetime, workflow_id: str) -> None:
    info = GLOBAL_REGISTRY.workflow(row["workflow_name"])
    if info is None:
        raise DBOSException(
            f"schedule {row['schedule_name']!r} runs {row['workflow_name']!r}, "
            "which this process has not registered"
        )
    start = prepare_workflow(
        rt, info, (tick, row["context"]), {}, workflow_id=workflow_id, if_new=True
    )
    dispatch(rt, info, start)


def apply_schedules(rt: Runtime, schedules: list[dict[str, Any]]) -> None:
    """Create or replace every schedule given, atomically (``DBOS.apply_schedules``)."""
    rt.require_launched()
    rows: list[tuple[str, str, str, StoredContext]] = []
    for i, entry in enumerate(schedules):
        for key in ("schedule_name", "workflow_fn", "schedule"):
            if key not in entry:
                raise DBOSException(f"Schedule entry {i} is missing required field '{key}'")
        check_unsupported(entry)
        info = workflow_info(entry["workflow_fn"])
        name = entry["schedule_name"]
        validate_new_schedule(name, info.name, entry["schedule"])
        rows.append(
            (
                name,
                info.name,
                entry["schedule"],
                encode_context(rt.sysdb.codecs, name, entry.get("context")),
            )
        )
    ScheduleStore(rt.sysdb).replace_all(rows)
    rt.schedules_changed()


def check_unsupported(options: dict[str, Any]) -> None:
    """DBOS 2.30 schedule options Spindle does not implement: refused, never ignored."""
    for key, default in (
        ("automatic_backfill", False),
        ("cron_timezone", None),
        ("queue_name", None),
    ):
        if options.get(key, default) != default:
            raise DBOSException(
                f"create_schedule({key}=...) is not supported by Spindle: schedules run on "
                "UTC cron ticks, started directly, and are backfilled with backfill_schedule"
            )


def backfill_ticks(
    row: WorkflowSchedule, start: datetime, end: datetime
) -> Iterator[tuple[datetime, str]]:
    """Each tick of ``row``'s cron in ``[start, end)`` with the live scheduler's workflow ID
    for it (naive datetimes are UTC, as in DBOS)."""
    start = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
    end = end if end.tzinfo is not None else end.replace(tzinfo=UTC)
    ticks = croniter(row["schedule"], start, second_at_beginning=True)
    while (tick := ticks.get_next(datetime)) < end:
        yield tick, tick_workflow_id(row["schedule_name"], tick)


def backfill(rt: Runtime, name: str, start: datetime, end: datetime) -> list[str]:
    """Start every tick of a schedule in ``[start, end)`` that no process started yet;
    returns the IDs of all of them (the live scheduler's IDs, so nothing runs twice)."""
    row = ScheduleStore(rt.sysdb).get(name)
    if row is None:
        raise DBOSException(f"schedule {name!r} does not exist")
    ids: list[str] = []
    for tick, workflow_id in backfill_ticks(row, start, end):
        _schedule_start(rt, row, tick, workflow_id)
        ids.append(workflow_id)
    return ids


def trigger(rt: Runtime, name: str) -> str:
    """Start a schedule's workflow now, outside its cron; returns the workflow ID."""
    row = ScheduleStore(rt.sysdb).get(name)
    if row is None:
        raise DBOSException(f"schedule {name!r} does not exist")
    now = datetime.fromtimestamp(rt.clock.now(), UTC)
    workflow_id = trigger_workflow_id(name, now)
    _schedule_start(rt, row, now, workflow_id)
    return workflow_id
