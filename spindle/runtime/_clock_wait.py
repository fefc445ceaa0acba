"""Durable waits on an injected clock: how a test's ``FakeClock`` moves ``DBOS.sleep``.

With the real clock a durable wait is one ``Event.wait(seconds)`` (no change on the hot
path). With any other clock the wait is measured in that clock's time: it blocks in
``clock.wait`` on a private condition that the wake-up source notifies, so ``advance``
past the deadline ends it, and a cancel, a shutdown or a message still ends it at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from spindle.diagnostics import Clock, RealClock

Subscribe = Callable[[Callable[[], None]], Callable[[], None]]


def is_real(clock: Clock | None) -> bool:
    """True for the production clock (waits then use the event's own timed wait)."""
    return clock is None or type(clock) is RealClock


def wait_on_clock(
    clock: Clock, is_set: Callable[[], bool], subscribe: Subscribe, seconds: float
) -> bool:
    """Wait until ``is_set()`` or ``seconds`` of ``clock`` time pass; True if it was set.

    ``subscribe(callback)`` must call ``callback`` on every wake-up (at once if one already
    happened) and return a function that unsubscribes it.
    """
    cond = threading.Condition()

    def notify() -> None:
        with cond:
            cond.notify_all()

    # Subscribed before the first check, under no lock: a wake-up between the two is seen
    # by the check; one after it notifies the condition, which the wait below releases
    # atomically, so none is lost.
    remove = subscribe(notify)
    try:
        deadline = clock.now() + seconds
        with cond:
            while not is_set():
                left = deadline - clock.now()
                if left <= 0:
                    return False
                clock.wait(cond, left)
            return True
    finally:
        remove()
