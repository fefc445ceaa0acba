"""Scheduled workflows, dynamic schedules and the pollers' part in the ordered shutdown."""

from __future__ import annotations

import collections
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import DBOS, DBOSConfigError, DBOSException
from spindle.diagnostics import (
    EventType,
    JoinOutcome,
    LifecycleEvent,
    ThreadGroup,
    ThreadInfo,
    ThreadKind,
    ThreadState,
)
from spindle.runtime._pollers import POLLERS, PollerGate
from spindle.runtime._schedules import ScheduleStore
from spindle.testing import FakeClock
from tests.conftest import MakeDBOS, new_postgres_url

ROOT = Path(__file__).resolve().parents[2]
#: A fake epoch that is a multiple of 5 and of 60, so cron ticks fall at START + k*5.
START = 1_800_000_000.0

ticks: queue.Queue[tuple[str, datetime, Any]] = queue.Queue()


@DBOS.workflow()
def every_five(scheduled_time: datetime, actual_time: datetime) -> str:
    ticks.put(("every_five", scheduled_time, actual_time))
    return scheduled_time.isoformat()


@DBOS.workflow()
def dynamic_task(scheduled_time: datetime, context: Any) -> None:
    ticks.put(("dynamic", scheduled_time, context))


@pytest.fixture(autouse=True)
def _fresh_pollers() -> Iterator[None]:
    """Registrations are process-wide: each test makes its own and leaves none behind."""
    while not ticks.empty():
        ticks.get_nowait()
    POLLERS.clear()
    yield
    POLLERS.clear()


def at(offset: float) -> datetime:
    """The fake clock's time ``offset`` seconds after START, as a UTC datetime."""
    return datetime.fromtimestamp(START + offset, UTC)


def thread_named(name: str) -> ThreadInfo:
    """The one registry entry with this name."""
    found = [t for t in DBOS.thread_registry.snapshot().threads if t.name == name]
    assert len(found) == 1, [t.name for t in DBOS.thread_registry.snapshot().threads]
    return found[0]


def joined_event(record_id: int) -> tuple[threading.Event, Any]:
    """An event set when the registry records the join of ``record_id`` (add before acting)."""
    joined = threading.Event()

    def listener(event: LifecycleEvent) -> None:
        if event.type is EventType.JOIN and event.record_id == record_id:
            joined.set()

    return joined, DBOS.thread_registry.add_listener(listener)


def test_scheduled_ticks_fire_on_the_fake_clock(make_dbos: MakeDBOS) -> None:
    """Each tick starts one workflow, at its time on the injected clock, with ID
    sched-<workflow>-<iso tick>; nothing fires between ticks."""
    clock = FakeClock(START)
    DBOS.scheduled("*/5 * * * * *")(every_five)
    make_dbos(clock=clock).launch()
    poller = thread_named("dbos-scheduler[every_five]")
    assert (poller.kind, poller.group) == (ThreadKind.POLLER, ThreadGroup.POLLER)

    assert clock.wait_for_waiters(2)  # this poller and the dynamic scheduler
    assert (
        thread_named("dbos-scheduler[every_five]").status_note == f"next tick {at(5).isoformat()}"
    )
    clock.advance(4.0)
    assert clock.wait_for_waiters(2)  # the scheduler polled and waits again; the poller slept on
    assert ticks.empty()

    clock.advance(1.0)
    assert ticks.get(timeout=10) == ("every_five", at(5), at(5))
    handle = DBOS.retrieve_workflow(f"sched-every_five-{at(5).isoformat()}")
    assert handle.get_result() == at(5).isoformat()

    clock.advance(10.0)  # two ticks behind: both start, in order
    assert [ticks.get(timeout=10)[1] for _ in range(2)] == [at(10), at(15)]
    assert len(DBOS.list_workflows(name="every_five")) == 3


def test_a_tick_already_started_is_not_run_again(make_dbos: MakeDBOS) -> None:
    """A process whose clock reaches a tick that another run already started starts
    nothing (the ID exists); after a restart, missed ticks are not backfilled."""
    clock = FakeClock(START)
    DBOS.scheduled("*/5 * * * * *")(every_five)
    make_dbos(clock=clock).launch()
    assert clock.wait_for_waiters(2)
    clock.advance(5.0)
    assert ticks.get(timeout=10)[1] == at(5)
    DBOS.retrieve_workflow(f"sched-every_five-{at(5).isoformat()}").get_result()
    DBOS.destroy()

    # Another process (or this one, restarted) whose clock is behind reaches tick +5 again.
    late = FakeClock(START)
    make_dbos(clock=late).launch()
    assert late.wait_for_waiters(2)
    late.advance(5.0)
    assert late.wait_for_waiters(2)  # the poller tried tick +5 and waits for +10
    assert ticks.empty()
    assert len(DBOS.list_workflows(name="every_five")) == 1
    DBOS.destroy()

    # Restarted at +60: the ticks from +10 to +60 were missed while down and stay missed.
    later = FakeClock(START + 60)
    make_dbos(clock=later).launch()
    assert later.wait_for_waiters(2)
    later.advance(5.0)
    assert ticks.get(timeout=10)[1] == at(65)
    assert len(DBOS.list_workflows(name="every_five")) == 2


def test_bad_crontab_and_non_workflow_are_rejected() -> None:
    """@DBOS.scheduled validates at decoration time."""
    with pytest.raises(ValueError, match="invalid crontab"):
        DBOS.scheduled("every minute")(every_five)
    with pytest.raises(DBOSException, match=r"is not a @DBOS\.workflow"):
        DBOS.scheduled("* * * * *")(lambda a, b: None)


@pytest.mark.parametrize("bad", [0, -1.0, "1", True])
def test_scheduler_polling_interval_is_validated(bad: object) -> None:
    """A bad scheduler_polling_interval_sec fails at construction, naming the key."""
    with pytest.raises(DBOSConfigError, match="'scheduler_polling_interval_sec'"):
        DBOS(config={"name": "a", "scheduler_polling_interval_sec": bad})  # type: ignore[typeddict-item]


def test_dynamic_schedule_thread_is_a_child_of_the_scheduler(make_dbos: MakeDBOS) -> None:
    """create_schedule starts dbos-schedule[<name>] (kind scheduler, poller group, child of
    dbos-dynamic-scheduler); it fires with the schedule's context; a delete seen at the
    next poll stops and joins it."""
    clock = FakeClock(START)
    make_dbos(clock=clock, scheduler_polling_interval_sec=2.0).launch()
    DBOS.create_schedule(
        schedule_name="nightly",
        workflow_fn=dynamic_task,
        schedule="*/5 * * * * *",
        context={"k": 1},
    )
    assert clock.wait_for_waiters(2)  # the scheduler and its new child
    scheduler = thread_named("dbos-dynamic-scheduler")
    child = thread_named("dbos-schedule[nightly]")
    assert (scheduler.kind, scheduler.group) == (ThreadKind.SCHEDULER, ThreadGroup.POLLER)
    assert (child.kind, child.group) == (ThreadKind.SCHEDULER, ThreadGroup.POLLER)
    assert child.parent_id == scheduler.record_id
    assert child.state.alive

    clock.advance(5.0)
    assert ticks.get(timeout=10) == ("dynamic", at(5), {"k": 1})
    DBOS.retrieve_workflow(f"sched-nightly-{at(5).isoformat()}").get_result()
    assert clock.wait_for_waiters(2)

    # Deleted as another process would (no wake-up here): seen within one polling interval.
    joined, remove = joined_event(child.record_id)
    try:
        ScheduleStore(DBOS.runtime.sysdb).delete("nightly")
        clock.advance(2.0)
        assert joined.wait(10)
    finally:
        remove()
    child = thread_named("dbos-schedule[nightly]")
    assert child.state is ThreadState.EXITED_OK
    assert child.join_outcome is JoinOutcome.JOINED
    assert child.stop_event_set is True
    assert thread_named("dbos-dynamic-scheduler").state.alive
    assert DBOS.list_schedules() == []


def test_schedule_api_create_list_pause_resume_delete(make_dbos: MakeDBOS) -> None:
    """The DBOS 3.x schedule calls: duplicates and bad crontabs raise, filters work, pause
    stops the thread, resume starts a new one, delete stops it (this process: at once)."""
    clock = FakeClock(START)
    make_dbos(clock=clock).launch()
    DBOS.create_schedule(schedule_name="a-1", workflow_fn=dynamic_task, schedule="* * * * *")
    DBOS.create_schedule(
        schedule_name="b-1", workflow_fn=dynamic_task, schedule="0 * * * * *", context=[1]
    )
    with pytest.raises(DBOSException, match="already exists"):
        DBOS.create_schedule(schedule_name="a-1", workflow_fn=dynamic_task, schedule="* * * * *")
    with pytest.raises(ValueError, match="invalid crontab"):
        DBOS.create_schedule(schedule_name="c", workflow_fn=dynamic_task, schedule="nope")
    with pytest.raises(DBOSException, match=r"is not a @DBOS\.workflow"):
        DBOS.create_schedule(schedule_name="c", workflow_fn=print, schedule="* * * * *")

    listed = DBOS.list_schedules()
    assert [s["schedule_name"] for s in listed] == ["a-1", "b-1"]
    assert listed[1]["context"] == [1]
    assert listed[1]["workflow_name"] == "dynamic_task"
    assert listed[1]["status"] == "ACTIVE"
    assert [s["schedule_name"] for s in DBOS.list_schedules(schedule_name_prefix="b")] == ["b-1"]
    assert DBOS.list_schedules(workflow_name="other") == []
    got = DBOS.get_schedule("a-1")
    assert got is not None
    assert got["schedule"] == "* * * * *"
    assert DBOS.get_schedule("missing") is None
    assert clock.wait_for_waiters(3)

    a1 = thread_named("dbos-schedule[a-1]")
    joined, remove = joined_event(a1.record_id)
    try:
        DBOS.pause_schedule("a-1")
        assert joined.wait(10)
    finally:
        remove()
    assert [s["status"] for s in DBOS.list_schedules(status="PAUSED")] == ["PAUSED"]
    assert clock.wait_for_waiters(2)
    DBOS.resume_schedule("a-1")
    assert clock.wait_for_waiters(3)
    names = [t.name for t in DBOS.thread_registry.snapshot().threads if t.state.alive]
    assert names.count("dbos-schedule[a-1]") == 1
    with pytest.raises(DBOSException, match="does not exist"):
        DBOS.pause_schedule("missing")

    b1 = thread_named("dbos-schedule[b-1]")
    joined, remove = joined_event(b1.record_id)
    try:
        DBOS.delete_schedule("b-1")
        assert joined.wait(10)
    finally:
        remove()
    DBOS.delete_schedule("b-1")  # no-op
    assert [s["schedule_name"] for s in DBOS.list_schedules()] == ["a-1"]


def test_backfill_and_trigger_start_missed_ticks_once(make_dbos: MakeDBOS) -> None:
    """Missed ticks run only when asked for (backfill_schedule), under the live scheduler's
    IDs, so a second backfill starts nothing; trigger_schedule starts one run now."""
    clock = FakeClock(START + 60)
    make_dbos(clock=clock).launch()
    DBOS.create_schedule(
        schedule_name="bf", workflow_fn=dynamic_task, schedule="*/20 * * * * *", context="c"
    )
    first = DBOS.backfill_schedule("bf", at(0), at(60))
    expected = [f"sched-bf-{at(20).isoformat()}", f"sched-bf-{at(40).isoformat()}"]
    assert [h.get_workflow_id() for h in first] == expected
    assert [h.get_result() for h in first] == [None, None]
    again = DBOS.backfill_schedule("bf", at(0), at(60))
    assert [h.get_result() for h in again] == [None, None]
    now = DBOS.trigger_schedule("bf")
    assert now.get_workflow_id() == f"sched-bf-trigger-{at(60).isoformat()}"
    assert now.get_result() is None
    got = sorted(ticks.get_nowait()[1:] for _ in range(ticks.qsize()))
    assert got == [(at(20), "c"), (at(40), "c"), (at(60), "c")]
    with pytest.raises(DBOSException, match="does not exist"):
        DBOS.trigger_schedule("missing")


def poller_names(events: list[LifecycleEvent]) -> set[str]:
    return {e.thread_name or "" for e in events if e.group is ThreadGroup.POLLER}


def test_shutdown_signals_every_poller_before_internal_threads(make_dbos: MakeDBOS) -> None:
    """Phase 1 sets every poller's stop event (cron, dynamic scheduler and its children)
    before phase 2 sets any internal one; every poller exits; no rule fires."""
    clock = FakeClock(START)
    DBOS.scheduled("*/5 * * * * *")(every_five)
    make_dbos(clock=clock).launch()
    DBOS.create_schedule(schedule_name="s", workflow_fn=dynamic_task, schedule="* * * * * *")
    assert clock.wait_for_waiters(3)
    clock.advance(1.0)  # the dynamic child fires once; the shutdown begins with it done
    assert ticks.get(timeout=10)[0] == "dynamic"
    DBOS.destroy()

    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []
    events = sorted(timeline.events, key=lambda e: e.seq)
    starts = {e.attrs["phase"]: e.seq for e in events if e.type is EventType.PHASE_START}
    assert starts["signal_pollers"] < starts["signal_internal"]
    sets = [e for e in events if e.type is EventType.STOP_EVENT_SET]
    poller_sets = [e.seq for e in sets if e.attrs.get("stop_group") == "poller"]
    internal_sets = [e.seq for e in sets if e.attrs.get("stop_group") == "internal"]
    assert poller_sets
    assert internal_sets
    assert max(poller_sets) < min(internal_sets)
    expected = {
        "dbos-scheduler[every_five]",
        "dbos-dynamic-scheduler",
        "dbos-schedule[s]",
    }
    assert poller_names([e for e in sets if e.attrs.get("stop_group") == "poller"]) == expected
    assert poller_names([e for e in events if e.type is EventType.EXIT]) == expected
    assert poller_names([e for e in events if e.type is EventType.SPAWN]) == set()


def test_a_poller_ignoring_its_stop_event_is_flagged(make_dbos: MakeDBOS) -> None:
    """With the injected fault, the rules name the poller that ignored its event; the real
    pollers exit cleanly and are not flagged."""
    clock = FakeClock(START)
    DBOS.scheduled("*/5 * * * * *")(every_five)
    make_dbos(
        clock=clock, diagnostics_fault="ignore_stop_event", thread_join_timeout_sec=0.2
    ).launch()
    assert clock.wait_for_waiters(2)
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    by_rule = {v.rule: v for v in timeline.violations}
    assert by_rule["join-timeout"].thread_names == ("dbos-fault-ignores-stop",)
    flagged = {n for v in timeline.violations for n in v.thread_names}
    assert flagged == {"dbos-fault-ignores-stop"}
    exits = {e.thread_name for e in timeline.events if e.type is EventType.EXIT}
    assert {"dbos-scheduler[every_five]", "dbos-dynamic-scheduler"} <= exits


def test_gate_waits_for_a_start_in_flight_and_then_refuses() -> None:
    """close() waits for pollers inside the gate, then admits no one: no start after it."""
    gate = PollerGate()
    inside = threading.Event()
    release = threading.Event()
    closed = threading.Event()

    def poller() -> None:
        with gate.enter() as admitted:
            assert admitted
            inside.set()
            release.wait(10)

    def closer() -> None:
        gate.close(10)
        closed.set()

    t1 = threading.Thread(target=poller)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=closer)
    t2.start()
    assert not closed.wait(0.05)  # bounded wait for a negative: close is still blocked
    release.set()
    assert closed.wait(10)
    t1.join()
    t2.join()
    with gate.enter() as admitted:
        assert admitted is False
    assert gate.closed


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (skipped locally when PostgreSQL is down)."""
    yield from new_postgres_url()


@pytest.mark.slow
@pytest.mark.postgres_only
def test_two_processes_start_each_tick_once(pg_url: str, tmp_path: Path) -> None:
    """Two processes with a 1-second cron on one PostgreSQL (real clock): each tick's
    workflow row exists once and its body ran once."""
    effects = tmp_path / "effects.log"
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.runtime.sched_app", pg_url, name, "4", str(effects)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("proc-a", "proc-b")
    ]
    try:
        for child in children:
            out, _ = child.communicate(timeout=60)
            assert child.returncode == 0
            assert out.strip().splitlines()[-1] == "DONE"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    ran = collections.Counter(effects.read_text().split())
    assert len(ran) >= 2
    assert set(ran.values()) == {1}, ran
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT workflow_uuid, count(*), min(status) FROM dbos.workflow_status "
                    "WHERE name = 'every_second' GROUP BY workflow_uuid"
                )
            ).all()
    finally:
        engine.dispose()
    assert {r[1] for r in rows} == {1}
    done = {r[0] for r in rows if r[2] == "SUCCESS"}
    assert done
    assert done <= set(ran)
    assert all(wf.startswith("sched-every_second-") for wf in ran)
