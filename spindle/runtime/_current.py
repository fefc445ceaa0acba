"""The process's current Runtime: set by ``DBOS(config=...)``, read by every public call.

DBOS Transact has one runtime per process; the facade, ``Queue.enqueue`` and the decorated
functions all find it here, so no part of the runtime has to import the facade to reach it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ._errors import DBOSException, DBOSNotLaunchedError

if TYPE_CHECKING:
    from ._runtime import Runtime

_current: Runtime | None = None
_lock = threading.Lock()


def peek() -> Runtime | None:
    """The current runtime, or None before ``DBOS(config=...)``."""
    return _current


def get() -> Runtime:
    """The current runtime; raises if ``DBOS(config=...)`` was never constructed."""
    rt = _current
    if rt is None:
        raise DBOSNotLaunchedError("DBOS(config=...) was not constructed")
    return rt


def install(rt: Runtime) -> None:
    """Make ``rt`` current, unless a launched runtime still runs (one per process)."""
    global _current
    with _lock:
        running = _current
        if running is not None and running.launched and not running.destroyed:
            raise DBOSException(
                "DBOS is already launched in this process; call DBOS.destroy() first"
            )
        _current = rt
