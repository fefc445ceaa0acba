"""Step retries wait longer after each failure: interval_seconds * backoff_rate ** attempt."""

from __future__ import annotations

import itertools
import time

import pytest

from spindle import DBOS, DBOSMaxStepRetriesExceeded
from spindle.runtime._durable import _Attempts
from spindle.runtime._functions import StepInfo


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


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.1, backoff_rate=4.0)
def fails_twice() -> int:
    attempt_times.append(time.monotonic())
    if len(attempt_times) < 3:
        raise ConnectionError(f"attempt {len(attempt_times)}")
    return len(attempt_times)


@DBOS.workflow()
def backoff_workflow() -> int:
    return fails_twice()


@pytest.mark.usefixtures("dbos")
def test_a_running_step_waits_longer_before_each_retry() -> None:
    """The waits between the three attempts are at least 0.1 s, then at least 0.4 s.

    Lower bounds only: a loaded machine lengthens a wait, never shortens it, so this cannot
    fail spuriously; without backoff the second wait is 0.1 s and the test fails.
    """
    attempt_times.clear()
    assert DBOS.start_workflow(backoff_workflow).get_result() == 3
    first, second = (b - a for a, b in itertools.pairwise(attempt_times))
    assert first >= 0.1 - 0.005, attempt_times
    assert second >= 0.4 - 0.005, attempt_times
