"""Step retries wait longer after each failure: interval_seconds * backoff_rate ** attempt."""

from __future__ import annotations

import threading

import pytest

from spindle import DBOS, DBOSMaxStepRetriesExceeded
from spindle.runtime._durable import _Attempts
from spindle.runtime._functions import StepInfo
from spindle.testing import FakeClock
from tests.conftest import MakeDBOS


def _policy(**overrides: object) -> StepInfo:
    fields: dict[str, object] = {
        "name": "s",
        "func": print,
        "is_async": False,
        "retries_allowed": True,
        "max_attempts": 4,
        "interval_seconds": 1.0,
        "backoff_rate": 2.0,
    }
    fields.update(overrides)
    return StepInfo(**fields)  # type: ignore[arg-type]


def test_retry_delays_grow_by_the_backoff_rate() -> None:
    """Four attempts, 1 s, rate 2: waits of 1, 2 and 4 s, then the retries-exceeded error."""
    attempts = _Attempts(_policy())
    delays = [attempts.failed(ConnectionError(str(i))) for i in range(3)]
    assert delays == [(None, 1.0), (None, 2.0), (None, 4.0)]
    final, delay = attempts.failed(ConnectionError("last"))
    assert isinstance(final, DBOSMaxStepRetriesExceeded)
    assert delay == 0.0


def test_no_retries_allowed_gives_up_at_once() -> None:
    """retries_allowed=False: the first error is the step's error, with no wait."""
    error = ConnectionError("once")
    assert _Attempts(_policy(retries_allowed=False)).failed(error) == (error, 0.0)


attempt_times: list[float] = []
attempted = threading.Condition()
clock: FakeClock | None = None


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=1.0, backoff_rate=4.0)
def fails_twice() -> int:
    assert clock is not None
    with attempted:
        attempt_times.append(clock.time())
        attempted.notify_all()
        count = len(attempt_times)
    if count < 3:
        raise ConnectionError(f"attempt {count}")
    return count


@DBOS.workflow()
def backoff_workflow() -> int:
    return fails_twice()


def _attempts(n: int) -> bool:
    with attempted:
        return attempted.wait_for(lambda: len(attempt_times) >= n, timeout=10)


def test_a_running_step_waits_exactly_interval_times_rate_before_each_retry(
    make_dbos: MakeDBOS,
) -> None:
    """On the injected clock: after the first failure the step waits exactly 1 s, after
    the second exactly 4 s (interval_seconds 1, backoff_rate 4), and no attempt comes early.
    """
    global clock
    clock = FakeClock()
    attempt_times.clear()
    make_dbos(clock=clock).launch()
    handle = DBOS.start_workflow(backoff_workflow)
    assert _attempts(1)
    first = attempt_times[0]
    # The back-off is a wait on the fake clock ending exactly 1 s after the failure.
    assert clock.wait_for_deadline(first + 1.0), clock.deadlines()
    clock.advance(0.5)
    assert clock.wait_for_deadline(first + 1.0), clock.deadlines()  # still waiting
    assert len(attempt_times) == 1
    clock.advance(0.5)
    assert _attempts(2)
    second = attempt_times[1]
    assert second - first == pytest.approx(1.0, abs=1e-9)
    assert clock.wait_for_deadline(second + 4.0), clock.deadlines()
    clock.advance(3.0)
    assert clock.wait_for_deadline(second + 4.0), clock.deadlines()
    assert len(attempt_times) == 2
    clock.advance(1.0)
    assert handle.get_result() == 3
    assert [t - first for t in attempt_times] == pytest.approx([0.0, 1.0, 5.0], abs=1e-9)
