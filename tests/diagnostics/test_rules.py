"""The ordering rules, each pinned by a real shutdown that breaks it and one that does not."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from spindle.diagnostics import (
    RULES,
    SHUTDOWN_PHASES,
    DiagnosticsSession,
    ShutdownTimeline,
    StopEvent,
    ThreadGroup,
    ThreadKind,
    ThreadRegistry,
    load_report,
)
from spindle.runtime._supervisor import Supervisor

from .conftest import ShutdownScenario, _wait_for_stop


def wait_for_stop(stop: StopEvent) -> None:
    """A well-behaved thread body."""
    stop.wait()


def rules_fired(timeline: ShutdownTimeline) -> set[str]:
    """The ids of the rules the timeline broke."""
    return {v.rule for v in timeline.violations}


def test_correct_shutdown_breaks_no_rule(scenario: ShutdownScenario) -> None:
    timeline = scenario.run()
    assert timeline.violations == []
    assert [p.name for p in timeline.phases] == list(SHUTDOWN_PHASES)
    assert all(p.outcome == "ok" for p in timeline.phases)
    assert all(not s.thread.is_alive() for s in scenario.supervisor.threads())


def test_pre_pr553_order_closing_databases_before_joining_is_caught(
    scenario: ShutdownScenario,
) -> None:
    """The old destroy(): signal, close the databases, then join (a query still in flight)."""

    def close_then_release() -> None:
        # The quick threads have finished; only the one with a query in flight is alive.
        scenario.poller.thread.join(10)
        scenario.internal.thread.join(10)
        scenario.close_databases()
        scenario.db_released.set()

    timeline = scenario.run(
        overrides={"interrupt_db": close_then_release, "close_databases": lambda: None}
    )
    # Nothing was joined before the close either: the quick threads have no join outcome.
    assert rules_fired(timeline) == {
        "db-closed-while-thread-alive",
        "thread-not-joined-before-db-close",
    }
    v = next(v for v in timeline.violations if v.rule == "db-closed-while-thread-alive")
    assert v.thread_names == ("dbos-timeout",)
    assert v.phase == "interrupt_db"
    assert "system" in v.message
    # The stack is the one taken when the database closed: the query in flight.
    frames = v.stacks[str(scenario.db_user.record.record_id)]
    assert any(f["function"] == "_db_user" for f in frames)


def test_thread_that_ignores_its_stop_event_is_a_join_timeout(
    registry: ThreadRegistry, supervisor: Supervisor, scenario: ShutdownScenario
) -> None:
    release = threading.Event()

    def ignores_stop(stop: StopEvent) -> None:
        release.wait()

    stubborn = supervisor.spawn(ThreadKind.CONDUCTOR, "dbos-conductor", ignores_stop)
    scenario.join_timeout = 0.2
    try:
        timeline = scenario.run()
    finally:
        release.set()
        stubborn.thread.join(10)
    # The scenario signals every internal thread in phase 2, the conductor too: early.
    assert rules_fired(timeline) == {
        "join-timeout",
        "db-closed-while-thread-alive",
        "conductor-stopped-before-drain",
    }
    v = next(v for v in timeline.violations if v.rule == "join-timeout")
    assert v.thread_names == ("dbos-conductor",)
    assert v.phase == "join_threads"
    assert any(f["function"] == "ignores_stop" for f in v.stacks[str(stubborn.record.record_id)])


def test_thread_spawned_after_shutdown_began_is_caught(
    supervisor: Supervisor, scenario: ShutdownScenario
) -> None:
    def late_spawn() -> None:
        supervisor.spawn(ThreadKind.SCHEDULER, "dbos-late-scheduler", lambda stop: None)

    timeline = scenario.run(overrides={"wait_workflows": late_spawn})
    assert "spawn-after-shutdown-began" in rules_fired(timeline)
    v = next(v for v in timeline.violations if v.rule == "spawn-after-shutdown-began")
    assert v.thread_names == ("dbos-late-scheduler",)
    assert v.phase == "wait_workflows"
    # Its stack is the spawner's: who spawned during shutdown.
    (frames,) = v.stacks.values()
    assert any(f["function"] == "late_spawn" for f in frames)


def test_executor_growing_its_pool_before_executor_shutdown_is_not_a_late_spawn(
    registry: ThreadRegistry, scenario: ShutdownScenario
) -> None:
    done = threading.Event()

    def worker() -> None:
        registry.adopt_current_thread(kind=ThreadKind.EXECUTOR, group=ThreadGroup.EXECUTOR)
        done.set()

    holder: list[threading.Thread] = []

    def grow_pool() -> None:
        t = threading.Thread(target=worker, name="dbos-executor-0")
        t.start()
        done.wait()
        holder.append(t)

    def join_all() -> None:
        scenario.join_threads()
        from spindle.runtime._supervisor import join_and_record

        for record in registry.live_records():
            if record.thread is holder[0]:
                join_and_record(registry, holder[0], record, 10)

    timeline = scenario.run(overrides={"wait_workflows": grow_pool, "join_threads": join_all})
    assert timeline.violations == []


def test_internal_threads_signalled_before_pollers_is_caught(scenario: ShutdownScenario) -> None:
    def internal_first() -> None:
        scenario.signal_internal()
        scenario.signal_pollers()

    timeline = scenario.run(
        overrides={"signal_pollers": internal_first, "signal_internal": lambda: None}
    )
    assert rules_fired(timeline) == {"pollers-not-signalled-first"}
    v = timeline.violations[0]
    assert set(v.thread_names) == {"dbos-queue-manager", "dbos-timeout"}
    assert v.phase == "signal_pollers"


def test_poller_that_exited_on_its_own_does_not_need_signalling_first(
    supervisor: Supervisor, scenario: ShutdownScenario
) -> None:
    finished = threading.Event()

    def one_shot(stop: StopEvent) -> None:
        finished.wait()

    poller = supervisor.spawn(
        ThreadKind.POLLER, "dbos-kafka[orders]", one_shot, group=ThreadGroup.POLLER
    )

    def poller_exits_then_signal() -> None:
        # The other poller is signalled; this one ends on its own just as shutdown starts,
        # so internal threads may go next. Its stop event, set late, changes nothing.
        scenario.poller.stop.set()
        finished.set()
        poller.thread.join(10)
        scenario.signal_internal()
        scenario.signal_pollers()

    timeline = scenario.run(
        overrides={"signal_pollers": poller_exits_then_signal, "signal_internal": lambda: None}
    )
    assert timeline.violations == []


def test_phases_out_of_order_are_caught(scenario: ShutdownScenario) -> None:
    phases = list(SHUTDOWN_PHASES)
    i, j = phases.index("stop_event_loop"), phases.index("stop_admin_server")
    phases[i], phases[j] = phases[j], phases[i]
    timeline = scenario.run(phases=phases)
    assert rules_fired(timeline) == {"phases-out-of-order"}


def test_a_phase_run_twice_is_caught(scenario: ShutdownScenario) -> None:
    timeline = scenario.run(phases=[*SHUTDOWN_PHASES, "close_databases"])
    assert rules_fired(timeline) == {"phases-out-of-order"}


def test_joining_before_db_interrupt_is_caught(scenario: ShutdownScenario) -> None:
    def join_early() -> None:
        scenario.db_released.set()
        scenario.join_threads()

    timeline = scenario.run(overrides={"shutdown_executor": join_early})
    assert rules_fired(timeline) == {"join-before-db-interrupt"}
    v = timeline.violations[0]
    assert v.phase == "shutdown_executor"
    assert "dbos-timeout" in v.thread_names


def test_joining_the_event_loop_in_its_own_phase_is_not_an_early_join(
    supervisor: Supervisor, scenario: ShutdownScenario
) -> None:
    loop = supervisor.spawn(ThreadKind.EVENT_LOOP, "dbos-event-loop", wait_for_stop)

    def stop_loop() -> None:
        loop.stop.set()
        supervisor.reap(loop, 10)

    timeline = scenario.run(overrides={"stop_event_loop": stop_loop})
    assert timeline.violations == []


def test_thread_without_join_outcome_when_databases_close_is_caught(
    scenario: ShutdownScenario,
) -> None:
    def join_all_but_one() -> None:
        for s in scenario.supervisor.threads():
            if s is scenario.internal:
                s.thread.join(10)  # exited, but nobody recorded a join outcome
            else:
                scenario.supervisor.reap(s, 10)

    timeline = scenario.run(overrides={"join_threads": join_all_but_one})
    assert rules_fired(timeline) == {"thread-not-joined-before-db-close"}
    assert timeline.violations[0].thread_names == ("dbos-queue-manager",)


def test_stop_event_never_set_is_caught_but_not_for_a_thread_done_before_shutdown(
    registry: ThreadRegistry, supervisor: Supervisor, scenario: ShutdownScenario
) -> None:
    one_shot = supervisor.spawn(ThreadKind.QUEUE, "dbos-one-shot", lambda stop: None)
    one_shot.thread.join(10)
    supervisor.reap(one_shot, 10)
    orphan = registry.new_stop_event("dbos-orphan-stop", ThreadGroup.INTERNAL)
    timeline = scenario.run()
    assert rules_fired(timeline) == {"stop-event-never-set"}
    assert "dbos-orphan-stop" in timeline.violations[0].message
    assert "dbos-one-shot" not in timeline.violations[0].message
    orphan.set()


def test_every_rule_has_a_message() -> None:
    assert set(RULES) == {
        "db-closed-while-thread-alive",
        "pollers-not-signalled-first",
        "spawn-after-shutdown-began",
        "join-before-db-interrupt",
        "thread-not-joined-before-db-close",
        "stop-event-never-set",
        "join-timeout",
        "phases-out-of-order",
        "conductor-stopped-before-drain",
    }


def test_conductor_is_judged_against_the_drain(
    supervisor: Supervisor, scenario: ShutdownScenario
) -> None:
    """Signalled in its own phase after the drain: clean. Signalled with the internal
    threads in phase 2: the conductor would miss the last workflows (DBOS #824)."""
    conductor = supervisor.spawn(ThreadKind.CONDUCTOR, "dbos-conductor", _wait_for_stop)

    def signal_internal_but_conductor() -> None:
        supervisor.signal(ThreadGroup.INTERNAL, exclude=frozenset({ThreadKind.CONDUCTOR}))

    def stop_conductor() -> None:
        supervisor.signal(kinds=frozenset({ThreadKind.CONDUCTOR}))

    scenario.db_released.set()
    timeline = scenario.run(
        overrides={
            "signal_internal": signal_internal_but_conductor,
            "stop_conductor": stop_conductor,
        }
    )
    assert timeline.violations == []
    assert conductor.record.join_outcome is not None

    early = supervisor.spawn(ThreadKind.CONDUCTOR, "dbos-conductor", _wait_for_stop)
    late = ShutdownScenario(scenario.registry, supervisor)
    late.db_released.set()
    timeline = late.run()
    assert rules_fired(timeline) == {"conductor-stopped-before-drain"}
    [v] = timeline.violations
    assert v.thread_names == ("dbos-conductor",)
    assert v.phase == "signal_internal"
    assert early.record.join_outcome is not None


# -- the report --------------------------------------------------------------------------------


def test_timeline_round_trips_through_json_and_loads_without_the_app(
    scenario: ShutdownScenario, tmp_path: Path
) -> None:
    def close_then_release() -> None:
        scenario.close_databases()
        scenario.db_released.set()

    report = tmp_path / "reports" / "shutdown.json"
    session = DiagnosticsSession(
        scenario.registry, service_name="shop", enabled=False, report_path=str(report)
    )
    timeline = scenario.run(overrides={"interrupt_db": close_then_release}, session=session)
    assert timeline.violations
    data = json.loads(report.read_text())
    assert data["schema_version"] == 1
    loaded = load_report(report)
    assert loaded.to_dict() == timeline.to_dict()
    assert loaded.violations == timeline.violations
    assert loaded.threads[scenario.db_user.record.record_id].name == "dbos-timeout"
    assert ShutdownTimeline.from_dict(json.loads(json.dumps(timeline.to_dict()))) == timeline
    assert session.timelines == [timeline]


def test_report_with_another_schema_version_is_refused(scenario: ShutdownScenario) -> None:
    data = scenario.run().to_dict()
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version 99"):
        ShutdownTimeline.from_dict(data)


def test_session_keeps_only_the_latest_timelines(scenario: ShutdownScenario) -> None:
    session = DiagnosticsSession(
        scenario.registry, service_name="shop", enabled=False, max_timelines=2
    )
    made = []
    for _ in range(3):
        recorder_timeline = scenario.run(phases=["signal_pollers"])
        session.record_timeline(recorder_timeline)
        made.append(recorder_timeline)
    assert session.timelines == made[1:]
