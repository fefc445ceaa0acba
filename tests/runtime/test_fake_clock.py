"""A test's FakeClock moves every durable wait with a timeout: sleep, recv, get_event."""

from __future__ import annotations

from spindle import DBOS
from spindle.testing import FakeClock
from tests.conftest import MakeDBOS


@DBOS.workflow()
def sleeps_an_hour() -> str:
    DBOS.sleep(3600)
    return "woke"


@DBOS.workflow()
def waits_for_a_message() -> object:
    return DBOS.recv("topic", timeout_seconds=600)


@DBOS.workflow()
def waits_for_an_event(target: str) -> object:
    return DBOS.get_event(target, "never", timeout_seconds=600)


def test_advance_wakes_dbos_sleep(make_dbos: MakeDBOS) -> None:
    """DBOS.sleep(3600) ends when the fake clock moves 3600 s, not before."""
    clock = FakeClock()
    make_dbos(clock=clock).launch()
    base = clock.waiters
    handle = DBOS.start_workflow(sleeps_an_hour)
    assert clock.wait_for_waiters(base + 1, timeout=10)  # the workflow is in its sleep
    clock.advance(3599)
    # Not due: the sleep is still parked on the clock (pollers that were due re-park) and
    # the workflow is still pending.
    assert clock.wait_for_waiters(base + 1, timeout=10)
    assert handle.get_status().status == "PENDING"
    clock.advance(1)
    assert handle.get_result() == "woke"


def test_advance_times_out_recv_and_get_event(make_dbos: MakeDBOS) -> None:
    """recv and get_event return None once fake time passes their timeout."""
    clock = FakeClock()
    make_dbos(clock=clock).launch()
    base = clock.waiters
    recv = DBOS.start_workflow(waits_for_a_message)
    event = DBOS.start_workflow(waits_for_an_event, "nobody")
    assert clock.wait_for_waiters(base + 2, timeout=10)
    clock.advance(600)
    assert recv.get_result() is None
    assert event.get_result() is None


def test_a_message_still_wakes_recv_at_once_on_a_fake_clock(make_dbos: MakeDBOS) -> None:
    """The fake clock does not make recv deaf: a send wakes it with no time moved."""
    clock = FakeClock()
    make_dbos(clock=clock).launch()
    base = clock.waiters
    handle = DBOS.start_workflow(waits_for_a_message)
    assert clock.wait_for_waiters(base + 1, timeout=10)
    DBOS.send(handle.workflow_id, "hello", "topic")
    assert handle.get_result() == "hello"
