"""spindle.testing: the fake clock, the timeline hook and the pytest plugin's fixtures."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from spindle.diagnostics import (
    Clock,
    DiagnosticsSession,
    RealClock,
    ShutdownTimeline,
    ThreadRegistry,
    add_timeline_listener,
)
from spindle.testing import FakeClock, LeakedThreadsError, check_no_leaked_threads, thread_idents
from spindle.testing._threads import DEFAULT_GRACE_SEC

from .conftest import ShutdownScenario

ROOT = Path(__file__).resolve().parents[2]


def test_both_clocks_satisfy_the_clock_protocol() -> None:
    assert isinstance(RealClock(), Clock)
    assert isinstance(FakeClock(), Clock)


def test_real_clock_waits_on_the_condition() -> None:
    clock = RealClock()
    cond = threading.Condition()
    with cond:
        clock.wait(cond, 0)  # a zero timeout returns at once
        clock.wait(cond, 0.001)
    assert abs(clock.now() - time.time()) < 5


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock(start=1_000_000.0, monotonic_start=50.0)
    assert clock.time() == clock.now() == 1_000_000.0
    assert clock.monotonic() == 50.0
    clock.advance(2.5)
    assert clock.now() == 1_000_002.5
    assert clock.monotonic() == 52.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_fake_clock_wakes_a_waiter_when_its_deadline_passes() -> None:
    """A deadline thread waiting 10 fake seconds wakes on advance(10), not before."""
    clock = FakeClock(start=0.0)
    cond = threading.Condition()
    woke_at: list[float] = []

    def deadline_thread() -> None:
        with cond:
            clock.wait(cond, 10.0)
            woke_at.append(clock.now())

    t = threading.Thread(target=deadline_thread, name="deadline")
    t.start()
    assert clock.wait_for_waiters(1)
    clock.advance(9.0)
    # Still waiting: advance(9) did not reach its deadline.
    assert clock.waiters == 1
    assert woke_at == []
    clock.advance(1.0)
    t.join(10)
    assert not t.is_alive()
    assert woke_at == [10.0]
    assert clock.waiters == 0


def test_fake_clock_wait_returns_on_notify_before_the_deadline() -> None:
    clock = FakeClock(start=0.0)
    cond = threading.Condition()
    work: list[int] = []

    def consumer() -> None:
        with cond:
            while not work:
                clock.wait(cond, 3600.0)

    t = threading.Thread(target=consumer, name="consumer")
    t.start()
    assert clock.wait_for_waiters(1)
    with cond:
        work.append(1)
        cond.notify_all()
    t.join(10)
    assert not t.is_alive()
    assert clock.now() == 0.0
    assert clock.waiters == 0


def test_fake_clock_wait_for_waiters_times_out() -> None:
    assert FakeClock().wait_for_waiters(1, timeout=0.01) is False


def test_fake_clock_can_drive_a_registry() -> None:
    clock = FakeClock(monotonic_start=100.0)
    registry = ThreadRegistry(clock=clock.monotonic)
    assert registry.now() == 100.0
    clock.advance(5)
    assert registry.now() == 105.0


def test_timeline_listener_sees_every_session_and_can_be_removed(
    scenario: ShutdownScenario,
) -> None:
    seen: list[ShutdownTimeline] = []
    remove = add_timeline_listener(seen.append)
    session = DiagnosticsSession(scenario.registry, service_name="a", enabled=False)
    other = DiagnosticsSession(ThreadRegistry(), service_name="b", enabled=False)
    t1 = scenario.run(session=session)
    other.record_timeline(t1)
    remove()
    session.record_timeline(t1)
    assert seen == [t1, t1]


def test_a_failing_timeline_listener_does_not_break_record_timeline(
    scenario: ShutdownScenario, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(t: ShutdownTimeline) -> None:
        raise RuntimeError("listener bug")

    remove = add_timeline_listener(broken)
    try:
        session = DiagnosticsSession(scenario.registry, service_name="a", enabled=False)
        scenario.run(session=session)
    finally:
        remove()
    assert session.timelines
    assert any("listener" in r.getMessage() for r in caplog.records)


INNER_TESTS = textwrap.dedent(
    """
    import threading

    from spindle.diagnostics import (
        SHUTDOWN_PHASES, DiagnosticsSession, ShutdownRecorder, ThreadGroup, ThreadRegistry,
    )

    RELEASE = threading.Event()


    def shutdown(registry, phases):
        session = DiagnosticsSession(registry, service_name="inner", enabled=True)
        recorder = ShutdownRecorder(registry, service="inner")
        recorder.begin()
        for name in phases:
            with recorder.phase(name):
                pass
        session.record_timeline(recorder.finish())
        session.shutdown()


    def test_clean_shutdown_passes(spindle_no_shutdown_violations):
        shutdown(ThreadRegistry(), SHUTDOWN_PHASES)
        assert len(spindle_no_shutdown_violations) == 1


    def test_broken_shutdown_fails(spindle_no_shutdown_violations):
        shutdown(ThreadRegistry(), list(reversed(SHUTDOWN_PHASES)))


    def test_leak_fails(spindle_no_leaked_threads):
        threading.Thread(target=RELEASE.wait, name="leaky", daemon=True).start()


    def test_slow_exit_past_the_configured_grace_fails(spindle_no_leaked_threads):
        # Lives ~0.6 s after the test; the ini grace below is 0.2 s.
        threading.Thread(target=threading.Event().wait, args=(0.6,), name="slow-exit").start()


    def test_no_leak_passes(spindle_no_leaked_threads):
        t = threading.Thread(target=lambda: None, name="tidy")
        t.start()
        t.join()


    def test_spans_go_to_the_in_memory_exporter(spindle_span_exporter):
        registry = ThreadRegistry()
        session = DiagnosticsSession(registry, service_name="inner", enabled=True)
        registry.new_stop_event("dbos-x", ThreadGroup.INTERNAL).set()
        session.shutdown()
        names = [s.name for s in spindle_span_exporter.get_finished_spans()]
        assert names == ["spindle.stop_event.register", "spindle.stop_event.set"]
        RELEASE.set()


    def test_fake_clock_fixture(spindle_fake_clock):
        before = spindle_fake_clock.now()
        spindle_fake_clock.advance(3)
        assert spindle_fake_clock.now() == before + 3
    """
)


@pytest.mark.slow
def test_plugin_fixtures_fail_and_pass_the_right_tests(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nspindle_leaked_thread_grace_sec = 0.2\n")
    installed = any(ep.name == "spindle" for ep in entry_points(group="pytest11"))
    plugin = "spindle" if installed else "spindle.testing._plugin"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", plugin, "-p", "no:cacheprovider", "-q", "-rE"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    text = out.stdout + out.stderr
    # The fixtures judge in teardown, which pytest reports as an error of that test.
    assert "7 passed, 3 errors" in text, text
    assert "threads leaked by this test: slow-exit" in text
    assert "ERROR test_inner.py::test_broken_shutdown_fails" in text
    assert "[phases-out-of-order] service='inner'" in text
    assert "ERROR test_inner.py::test_leak_fails" in text
    assert "threads leaked by this test: leaky" in text


def test_the_default_leaked_thread_grace_is_at_most_one_second() -> None:
    """A thread living seconds past its test is a leak, not noise."""
    assert DEFAULT_GRACE_SEC <= 1.0
    release = threading.Event()
    before = thread_idents()
    lingering = threading.Thread(target=release.wait, name="lingering")
    lingering.start()
    try:
        with pytest.raises(LeakedThreadsError, match="lingering"):
            check_no_leaked_threads(before, grace=0.05)
    finally:
        release.set()
        lingering.join()
