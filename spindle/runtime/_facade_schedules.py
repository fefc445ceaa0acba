"""``DBOS``'s schedule names of DBOS 2.30 beyond Spindle's first ones: ``create_schedule``
with DBOS's options, ``apply_schedules`` and the ``_async`` twins, as a base class of the
facade. Each validates and delegates to ``_schedule_api``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

from . import _current, _schedule_api
from ._context import current_workflow
from ._errors import DBOSException
from ._pollers import ScheduledPoller
from ._schedules import WorkflowSchedule


def start_if_launched(poller: ScheduledPoller) -> None:
    """A ``@DBOS.scheduled`` applied after ``launch()`` starts its thread at once (as DBOS);
    before launch, or once shutdown began, launch's own start (or nothing) covers it."""
    rt = _current.peek()
    if rt is None:
        return
    # Under the lock launch and destroy hold: never a thread for a runtime being torn down.
    with rt.state_lock:
        if rt.launched and not rt.destroyed and rt.pollers is not None:
            rt.pollers.start_scheduled(poller)


class ScheduleInput(TypedDict, total=False):
    """One schedule of ``DBOS.apply_schedules`` (DBOS's ``ScheduleInput``)."""

    schedule_name: str
    workflow_fn: Callable[..., Any]
    schedule: str
    context: Any
    automatic_backfill: bool
    cron_timezone: str | None
    queue_name: str | None


class ScheduleAPI:
    """The schedule classmethods of ``DBOS`` that DBOS 2.30 added."""

    @classmethod
    def create_schedule(
        cls,
        *,
        schedule_name: str,
        workflow_fn: Callable[..., Any],
        schedule: str,
        context: Any = None,
        automatic_backfill: bool = False,
        cron_timezone: str | None = None,
        queue_name: str | None = None,
    ) -> None:
        """Store a cron schedule that runs ``workflow_fn(scheduled_time, context)``;
        raises if one with this name exists. DBOS's ``automatic_backfill``,
        ``cron_timezone`` and ``queue_name`` are refused (not implemented), never ignored."""
        _schedule_api.check_unsupported(
            {
                "automatic_backfill": automatic_backfill,
                "cron_timezone": cron_timezone,
                "queue_name": queue_name,
            }
        )
        _schedule_api.create_schedule(_current.get(), schedule_name, workflow_fn, schedule, context)

    @classmethod
    async def create_schedule_async(
        cls,
        *,
        schedule_name: str,
        workflow_fn: Callable[..., Any],
        schedule: str,
        context: Any = None,
        automatic_backfill: bool = False,
        cron_timezone: str | None = None,
        queue_name: str | None = None,
    ) -> None:
        """Async :meth:`create_schedule`."""
        cls.create_schedule(
            schedule_name=schedule_name,
            workflow_fn=workflow_fn,
            schedule=schedule,
            context=context,
            automatic_backfill=automatic_backfill,
            cron_timezone=cron_timezone,
            queue_name=queue_name,
        )

    @classmethod
    async def list_schedules_async(
        cls,
        *,
        status: str | list[str] | None = None,
        workflow_name: str | list[str] | None = None,
        schedule_name_prefix: str | list[str] | None = None,
    ) -> list[WorkflowSchedule]:
        """Async ``list_schedules``."""
        return _schedule_api.list_schedules(
            _current.get(), status, workflow_name, schedule_name_prefix
        )

    @classmethod
    async def get_schedule_async(cls, name: str) -> WorkflowSchedule | None:
        """Async ``get_schedule``."""
        return _schedule_api.get_schedule(_current.get(), name)

    @classmethod
    async def delete_schedule_async(cls, name: str) -> None:
        """Async ``delete_schedule``."""
        _schedule_api.delete_schedule(_current.get(), name)

    @classmethod
    def apply_schedules(cls, schedules: list[ScheduleInput]) -> None:
        """Create or replace all these schedules in one transaction (not from a workflow)."""
        ctx = current_workflow.get()
        if ctx is not None:
            raise DBOSException("DBOS.apply_schedules cannot be called from within a workflow")
        _schedule_api.apply_schedules(_current.get(), [dict(s) for s in schedules])

    @classmethod
    async def apply_schedules_async(cls, schedules: list[ScheduleInput]) -> None:
        """Async :meth:`apply_schedules`."""
        cls.apply_schedules(schedules)
