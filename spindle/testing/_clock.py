"""A fake clock: tests move time instead of sleeping (Trio's ``MockClock`` idea)."""

from __future__ import annotations

import threading
import time


class FakeClock:
    """A :class:`spindle.diagnostics.Clock` whose time moves only when a test calls ``advance``.

    ``wait(cond, timeout)`` blocks (for real) until ``cond`` is notified or ``advance`` moves
    the fake time past ``now() + timeout``. ``time()``/``now()`` are epoch seconds and
    ``monotonic()`` moves with them, so it can also be a registry's clock.

    Do not call :meth:`advance` while holding a waiter's condition: advance takes each expired
    waiter's condition to notify it.
    """

    def __init__(self, start: float | None = None, *, monotonic_start: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wall = time.time() if start is None else start
        self._offset = monotonic_start - self._wall
        # (deadline, condition) of every thread blocked in wait(); list, as two waiters may
        # share a condition and a deadline.
        self._waiters: list[tuple[float, threading.Condition]] = []

    def time(self) -> float:
        """Fake epoch seconds."""
        with self._lock:
            return self._wall

    def now(self) -> float:
        """Fake epoch seconds (the ``Clock`` protocol's name for :meth:`time`)."""
        return self.time()

    def monotonic(self) -> float:
        """Fake monotonic seconds; moves exactly as :meth:`time` does."""
        with self._lock:
            return self._wall + self._offset

    @property
    def waiters(self) -> int:
        """How many threads are blocked in :meth:`wait` with a timeout now."""
        with self._lock:
            return len(self._waiters)

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Wait on ``cond`` (held by the caller) until notified or fake ``timeout`` elapses."""
        if timeout is None:
            cond.wait()
            return
        if timeout <= 0:
            return
        with self._lock:
            entry = (self._wall + timeout, cond)
            self._waiters.append(entry)
            self._changed.notify_all()
        try:
            # No lost wake-up: advance() must take ``cond`` to notify, and the caller holds
            # it until cond.wait() releases it atomically.
            cond.wait()
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._changed.notify_all()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every waiter whose deadline has passed."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._wall += seconds
            due = [(d, c) for d, c in self._waiters if d <= self._wall]
            for entry in due:
                self._waiters.remove(entry)
        for _deadline, cond in due:
            with cond:
                cond.notify_all()

    def wait_for_waiters(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block (for real) until ``count`` threads wait on this clock; False on timeout.

        How a test knows a worker reached its wait before it advances time, without sleeping.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._waiters) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait_for_deadline(
        self, at: float, timeout: float = 10.0, *, tolerance: float = 1e-6
    ) -> bool:
        """Block (for real) until a thread waits until fake time ``at``; False on timeout.

        Pins the length of a wait exactly (a step's back-off, a sleep), where
        :meth:`wait_for_waiters` only says that something waits: ``tolerance`` absorbs the
        rounding of ``now + seconds``.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while not any(abs(d - at) <= tolerance for d, _ in self._waiters):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def deadlines(self) -> list[float]:
        """The fake times every waiting thread waits until now, earliest first."""
        with self._lock:
            return sorted(d for d, _ in self._waiters)

    def __repr__(self) -> str:
        return f"FakeClock(time={self.time():.3f})"
