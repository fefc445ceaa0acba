"""The leaked-thread check: a test must end with no runtime thread it started still alive."""

from __future__ import annotations

import threading
import time

#: How long a test's threads get to finish exiting before they count as leaked. Short: a
#: thread that lives on for seconds after its test is a leak worth seeing, not noise.
DEFAULT_GRACE_SEC = 1.0


class LeakedThreadsError(AssertionError):
    """Threads that a test started are still alive after it ended."""


def runtime_threads(before: set[int] | None = None) -> list[threading.Thread]:
    """Live threads that look like the runtime's (by name), and were not in ``before``."""
    out = []
    for t in threading.enumerate():
        if t is threading.main_thread() or not t.is_alive():
            continue
        if before is not None and t.ident in before:
            continue
        out.append(t)
    return out


def check_no_leaked_threads(before: set[int], *, grace: float = DEFAULT_GRACE_SEC) -> None:
    """Raise :class:`LeakedThreadsError` if a thread started after ``before`` is still alive.

    Threads get ``grace`` seconds (joined, never slept on) to finish exiting: a thread that
    was told to stop and is unwinding is not a leak.
    """
    deadline = time.monotonic() + grace
    leaked = []
    for t in runtime_threads(before):
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            leaked.append(t)
    if leaked:
        names = ", ".join(sorted(t.name for t in leaked))
        raise LeakedThreadsError(f"threads leaked by this test: {names}")


def thread_idents() -> set[int]:
    """The idents of every live thread now."""
    return {t.ident for t in threading.enumerate() if t.ident is not None}
