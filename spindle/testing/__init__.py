"""Testing helpers for apps built on Spindle: leaked-thread checks, a fake clock, fixtures.

The pytest fixtures live in ``spindle.testing._plugin``, registered as the ``spindle``
pytest plugin (entry point ``pytest11``).
"""

from spindle.diagnostics import RealClock as RealClock

from ._clock import FakeClock as FakeClock
from ._threads import LeakedThreadsError as LeakedThreadsError
from ._threads import check_no_leaked_threads as check_no_leaked_threads
from ._threads import runtime_threads as runtime_threads
from ._threads import thread_idents as thread_idents

__all__ = [
    "FakeClock",
    "LeakedThreadsError",
    "RealClock",
    "check_no_leaked_threads",
    "runtime_threads",
    "thread_idents",
]
