"""``DBOSClient``'s schedule management: DBOS's client schedule methods, by workflow name.

The client writes the schedules table (``_schedules.ScheduleStore``) directly; the app's
dynamic scheduler reads it each ``scheduler_polling_interval_sec`` and starts, pauses or
stops the schedule's thread then. The client has no registry, so (as DBOS's client) the
workflow name is not checked against one: a name no app registers is stored, and the app
logs it when it tries to run it.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from ._cron import check_cron
from ._errors import DBOSException
from ._schedule_api import check_unsupported
from ._schedules import ScheduleStore, StoredContext, WorkflowSchedule, encode_context
from ._sysdb import SystemDatabase


class ClientScheduleInput(TypedDict, total=False):
    """One schedule of ``DBOSClient.apply_schedules`` (DBOS's ``ClientScheduleInput``)."""

    schedule_name: str
    workflow_name: str
    workflow_class_name: str | None
    schedule: str
    context: Any
    automatic_backfill: bool
    cron_timezone: str | None
    queue_name: str | None
    application_name: str | None


def _checked(
    name: Any, workflow_name: Any, cron: Any, class_name: Any, options: dict[str, Any]
) -> None:
    if not isinstance(name, str) or not name:
        raise DBOSException("schedule_name must be a non-empty string")
    if not isinstance(workflow_name, str) or not workflow_name:
        raise DBOSException(f"schedule {name!r}: workflow_name must be a non-empty string")
    if class_name is not None:
        # Spindle's schedules store a workflow name only; a class-qualified schedule would
        # silently run the wrong function, so it is refused.
        raise DBOSException("create_schedule(workflow_class_name=...) is not supported by Spindle")
    check_unsupported(options)
    check_cron(cron, f"schedule {name!r}")


class ClientSchedules:
    """The schedule methods of ``DBOSClient`` (mixed in; needs ``_sysdb``)."""

    _sysdb: SystemDatabase

    def create_schedule(
        self,
        *,
        schedule_name: str,
        workflow_name: str,
        schedule: str,
        context: Any = None,
        workflow_class_name: str | None = None,
        automatic_backfill: bool = False,
        cron_timezone: str | None = None,
        queue_name: str | None = None,
    ) -> None:
        """Store a cron schedule that runs ``workflow_name(scheduled_time, context)`` in the
        app; raises if one with this name exists."""
        _checked(
            schedule_name,
            workflow_name,
            schedule,
            workflow_class_name,
            {
                "automatic_backfill": automatic_backfill,
                "cron_timezone": cron_timezone,
                "queue_name": queue_name,
            },
        )
        data = encode_context(self._sysdb.codecs, schedule_name, context)
        if not ScheduleStore(self._sysdb).create(schedule_name, workflow_name, schedule, data):
            raise DBOSException(f"schedule {schedule_name!r} already exists")

    async def create_schedule_async(self, **kwargs: Any) -> None:
        """Async :meth:`create_schedule` (same keyword arguments)."""
        await asyncio.to_thread(lambda: self.create_schedule(**kwargs))

    def list_schedules(
        self,
        *,
        status: str | list[str] | None = None,
        workflow_name: str | list[str] | None = None,
        schedule_name_prefix: str | list[str] | None = None,
    ) -> list[WorkflowSchedule]:
        """The stored schedules, optionally filtered."""
        return ScheduleStore(self._sysdb).list(
            status=status, workflow_name=workflow_name, schedule_name_prefix=schedule_name_prefix
        )

    async def list_schedules_async(
        self,
        *,
        status: str | list[str] | None = None,
        workflow_name: str | list[str] | None = None,
        schedule_name_prefix: str | list[str] | None = None,
    ) -> list[WorkflowSchedule]:
        """Async :meth:`list_schedules`."""
        return await asyncio.to_thread(
            lambda: self.list_schedules(
                status=status,
                workflow_name=workflow_name,
                schedule_name_prefix=schedule_name_prefix,
            )
        )

    def get_schedule(self, name: str) -> WorkflowSchedule | None:
        """One schedule by name, or None."""
        return ScheduleStore(self._sysdb).get(name)

    async def get_schedule_async(self, name: str) -> WorkflowSchedule | None:
        """Async :meth:`get_schedule`."""
        return await asyncio.to_thread(self.get_schedule, name)

    def delete_schedule(self, name: str) -> None:
        """Delete a schedule (no-op if missing); the app stops it within one poll."""
        ScheduleStore(self._sysdb).delete(name)

    async def delete_schedule_async(self, name: str) -> None:
        """Async :meth:`delete_schedule`."""
        await asyncio.to_thread(self.delete_schedule, name)

    def pause_schedule(self, name: str) -> None:
        """Pause a schedule: it does not fire until resumed."""
        if not ScheduleStore(self._sysdb).set_status(name, "PAUSED"):
            raise DBOSException(f"schedule {name!r} does not exist")

    def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule."""
        if not ScheduleStore(self._sysdb).set_status(name, "ACTIVE"):
            raise DBOSException(f"schedule {name!r} does not exist")

    def apply_schedules(self, schedules: list[ClientScheduleInput]) -> None:
        """Create or replace every schedule given, in one transaction."""
        rows: list[tuple[str, str, str, StoredContext]] = []
        for i, entry in enumerate(schedules):
            for key in ("schedule_name", "workflow_name", "schedule"):
                if key not in entry:
                    raise DBOSException(f"Schedule entry {i} is missing required field '{key}'")
            name = entry["schedule_name"]
            options = {
                k: entry.get(k) for k in ("automatic_backfill", "cron_timezone", "queue_name")
            }
            if options["automatic_backfill"] is None:
                options["automatic_backfill"] = False
            _checked(
                name,
                entry["workflow_name"],
                entry["schedule"],
                entry.get("workflow_class_name"),
                options,
            )
            context = encode_context(self._sysdb.codecs, name, entry.get("context"))
            rows.append((name, entry["workflow_name"], entry["schedule"], context))
        ScheduleStore(self._sysdb).replace_all(rows)

    async def apply_schedules_async(self, schedules: list[ClientScheduleInput]) -> None:
        """Async :meth:`apply_schedules`."""
        await asyncio.to_thread(self.apply_schedules, schedules)
