"""The one list of shutdown phase specs, and the steps before phase 1 on the timeline."""

from __future__ import annotations

import pytest

from spindle.diagnostics import (
    SHUTDOWN_PHASES,
    EventType,
    ShutdownRecorder,
    StopEvent,
    ThreadGroup,
    ThreadKind,
    ThreadRegistry,
)
from spindle.diagnostics import _phases as specs
from spindle.runtime import _shutdown
from spindle.runtime._supervisor import Supervisor


def test_the_timeline_phases_are_the_spec_names() -> None:
    assert tuple(s.name for s in specs.PHASE_SPECS) == SHUTDOWN_PHASES
    assert len(set(SHUTDOWN_PHASES)) == len(SHUTDOWN_PHASES) == 12
    assert {
        ThreadKind.CONDUCTOR,
        ThreadKind.EVENT_LOOP,
        ThreadKind.ADMIN_SERVER,
        ThreadKind.NOTIFICATION_LISTENER,
    } == specs.OWN_PHASE_KINDS
    assert not {s.name for s in specs.PREPARE_STEPS} & set(SHUTDOWN_PHASES)


def test_the_runtime_binds_exactly_one_action_to_each_spec() -> None:
    assert tuple(_shutdown.PHASES) == specs.PHASE_SPECS
    assert tuple(_shutdown.PREPARE) == specs.PREPARE_STEPS


def test_bind_refuses_a_missing_or_an_extra_action() -> None:
    def act() -> None:
        pass

    actions = {s: act for s in specs.PHASE_SPECS}
    del actions[specs.INTERRUPT_DB]
    with pytest.raises(TypeError, match=r"missing \['interrupt_db'\]"):
        specs.bind(specs.PHASE_SPECS, actions)
    actions[specs.INTERRUPT_DB] = act
    actions[specs.CLOSE_QUEUES] = act
    with pytest.raises(TypeError, match=r"extra \['close_queues'\]"):
        specs.bind(specs.PHASE_SPECS, actions)


def _run(registry: ThreadRegistry, supervisor: Supervisor, spawn_in: str) -> list[str]:
    """A clean shutdown whose prepare step or first phase spawns a poller; the rules fired."""

    def body(stop: StopEvent) -> None:
        stop.wait()

    def spawn() -> None:
        supervisor.spawn(ThreadKind.POLLER, "dbos-late", body, group=ThreadGroup.POLLER)

    recorder = ShutdownRecorder(registry, service="shop")
    recorder.begin()
    for step in specs.PREPARE_STEPS:
        with recorder.prepare(step.name):
            if step.name == spawn_in:
                spawn()
    for spec in specs.PHASE_SPECS:
        with recorder.phase(spec.name):
            if spec.name == spawn_in:
                spawn()
            if spec is specs.SIGNAL_POLLERS:
                supervisor.signal(ThreadGroup.POLLER)
            elif spec is specs.SIGNAL_INTERNAL:
                supervisor.signal(ThreadGroup.INTERNAL)
            elif spec is specs.INTERRUPT_DB:
                registry.emit(EventType.DB_INTERRUPT, None, database="system")
            elif spec is specs.JOIN_THREADS:
                for s in supervisor.threads():
                    supervisor.reap(s, 10.0)
            elif spec is specs.CLOSE_DATABASES:
                registry.emit(EventType.DB_CLOSE, None, database="system")
    timeline = recorder.finish()
    steps = [e.attrs["step"] for e in timeline.events if e.type is EventType.PREPARE_START]
    assert steps == [s.name for s in specs.PREPARE_STEPS]
    assert [p.name for p in timeline.phases] == list(SHUTDOWN_PHASES)
    return sorted({v.rule for v in timeline.violations})


def test_a_spawn_in_a_prepare_step_is_not_a_late_spawn(
    registry: ThreadRegistry, supervisor: Supervisor
) -> None:
    # The prepare steps exist to stop spawners: one that finishes its spawn there is fine.
    assert _run(registry, supervisor, specs.CLOSE_QUEUES.name) == []


def test_a_spawn_in_phase_one_still_is(registry: ThreadRegistry, supervisor: Supervisor) -> None:
    assert _run(registry, supervisor, specs.SIGNAL_POLLERS.name) == ["spawn-after-shutdown-began"]


def test_a_failing_prepare_step_is_recorded_and_raised(registry: ThreadRegistry) -> None:
    recorder = ShutdownRecorder(registry)
    with pytest.raises(RuntimeError, match="begin"), recorder.prepare("too-early"):
        pass
    recorder.begin()
    with pytest.raises(ValueError, match="boom"), recorder.prepare(specs.CLOSE_POLLER_GATE.name):
        raise ValueError("boom")
    with recorder.phase(specs.SIGNAL_POLLERS.name):
        pass
    with pytest.raises(RuntimeError, match="before phase 1"), recorder.prepare("late"):
        pass
    timeline = recorder.finish()
    (end,) = [e for e in timeline.events if e.type is EventType.PREPARE_END]
    assert (end.attrs["outcome"], end.attrs["error"]) == ("error", "ValueError: boom")
