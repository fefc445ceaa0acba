"""Injectable time: the protocol deadline code takes, and the real clock."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What deadline and scheduler code asks of time.

    ``wait`` has ``threading.Condition.wait`` semantics: the caller holds ``cond``, the call
    releases it while waiting and reacquires it before returning, and it may return early
    (a notify, or a spurious wake-up), so callers loop and re-check ``now()``.
    """

    def now(self) -> float:
        """Current wall-clock time, epoch seconds."""
        ...

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Wait on ``cond`` (held by the caller) for at most ``timeout`` seconds of this clock."""
        ...


class RealClock:
    """The clock of production: ``time.time()`` and a real ``Condition.wait``."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """``cond.wait(timeout)``; a negative timeout returns at once."""
        if timeout is not None and timeout <= 0:
            return
        cond.wait(timeout)

    def __repr__(self) -> str:
        return "RealClock()"
