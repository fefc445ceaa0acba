"""Cron ticks: the loop one schedule thread runs, on the runtime's (injectable) clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from croniter import croniter

from spindle.diagnostics import StopEvent, ThreadGroup, ThreadKind, ThreadRecord

from ._pollers import PollerGate, ScheduledPoller, start_once
from ._supervisor import Supervised

if TYPE_CHECKING:
    from ._functions import WorkflowInfo
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

#: Builds a tick's workflow arguments from (scheduled time, actual start time).
TickArgs = Callable[[datetime, datetime], tuple[Any, ...]]


def check_cron(cron: str, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``cron`` is a 5- or 6-field crontab
    (seconds first when there are six, as DBOS reads it)."""
    if not isinstance(cron, str) or not croniter.is_valid(cron, second_at_beginning=True):
        raise ValueError(f"invalid crontab {cron!r} for {what}")


def tick_workflow_id(prefix: str, tick: datetime) -> str:
    """The ID of a tick's workflow, the same in every process: ``sched-<name>-<iso tick>``."""
    return f"sched-{prefix}-{tick.isoformat()}"


def trigger_workflow_id(prefix: str, now: datetime) -> str:
    """The ID of a schedule's run triggered at ``now`` (``trigger_schedule``)."""
    return f"sched-{prefix}-trigger-{now.isoformat()}"


def cron_body(
    rt: Runtime,
    gate: PollerGate,
    *,
    id_prefix: str,
    info: WorkflowInfo,
    cron: str,
    make_args: TickArgs,
) -> Callable[[StopEvent], None]:
    """The body of one schedule thread: wait for each tick, then start its workflow once.

    Ticks start from the launch time: ticks missed while the app was down are not run
    (DBOS does not backfill either). A tick the clock has already passed (the thread was
    slow, or a test moved the clock by several ticks) is started at once, in order.
    """

    def body(stop: StopEvent) -> None:
        clock = rt.clock
        cond = threading.Condition()

        def wake() -> None:
            with cond:
                cond.notify_all()

        # The stop event wakes the clock wait: the thread never waits out a whole tick.
        stop.add_callback(wake)
        record = rt.registry.record_for_ident(threading.get_ident())
        ticks = croniter(cron, datetime.fromtimestamp(clock.now(), UTC), second_at_beginning=True)
        while not stop.is_set():
            tick: datetime = ticks.get_next(datetime)
            if record is not None:
                # Shown by the dashboard: what this thread waits for.
                rt.registry.set_status(record, f"next tick {tick.isoformat()}")
            with cond:
                # No lost wake-up: the callback needs ``cond``, which we hold until the
                # clock's wait releases it atomically.
                while not stop.is_set():
                    left = tick.timestamp() - clock.now()
                    if left <= 0:
                        break
                    clock.wait(cond, left)
            if stop.is_set():
                return
            workflow_id = tick_workflow_id(id_prefix, tick)
            actual = datetime.fromtimestamp(clock.now(), UTC)
            try:
                start_once(rt, gate, stop, info, make_args(tick, actual), workflow_id)
            except Exception:
                if stop.is_set():
                    return
                logger.exception("spindle: starting scheduled workflow %s failed", workflow_id)

    return body


def spawn_scheduled(
    rt: Runtime, gate: PollerGate, poller: ScheduledPoller, parent: ThreadRecord | None = None
) -> Supervised:
    """Spawn ``dbos-scheduler[<workflow>]`` for a ``@DBOS.scheduled`` workflow, which is
    called with ``(scheduled_time, actual_time)``."""
    body = cron_body(
        rt,
        gate,
        id_prefix=poller.info.name,
        info=poller.info,
        cron=poller.cron,
        make_args=lambda tick, actual: (tick, actual),
    )
    return rt.supervisor.spawn(
        ThreadKind.POLLER,
        f"dbos-scheduler[{poller.info.name}]",
        body,
        group=ThreadGroup.POLLER,
        parent=parent,
    )
