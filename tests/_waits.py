"""Bounded waits for tests: on a thread's stack or on a condition, never a bare sleep.

A test that must wait for another thread to reach a point polls what it can observe (the
thread's frames, an in-flight table) every 10 ms, up to a bound, and fails naming what
never happened; the wait is an Event's, so nothing here sleeps past the condition.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from spindle.diagnostics._stacks import current_frames

WAIT = 30.0


def in_function(thread: threading.Thread, function: str, caller: str | None = None) -> bool:
    """Whether the thread's stack holds a frame of ``function`` now (called by ``caller``
    when given)."""
    frame = current_frames().get(thread.ident or -1)
    while frame is not None:
        outer = frame.f_back
        if frame.f_code.co_name == function and (
            caller is None or (outer is not None and outer.f_code.co_name == caller)
        ):
            return True
        frame = outer
    return False


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait until ``condition()`` holds, checking every 10 ms; fails after ``timeout``."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError(f"{what} never happened")


def wait_until_in(
    thread: threading.Thread, function: str, caller: str | None = None, timeout: float = WAIT
) -> None:
    """Wait until the thread's stack holds a frame of ``function`` (bounded)."""
    wait_until(
        lambda: in_function(thread, function, caller), f"the thread reaching {function}()", timeout
    )
