"""SIGTERM runs the ordered shutdown: what ``docker stop``, systemd and Kubernetes send.

Without a handler Python dies of SIGTERM at once: no phase runs, no timeline, no report.
At ``launch()`` on the main thread (``handle_signals``, default on) a handler is installed
that runs ``destroy()`` and then does what would have happened without Spindle: it calls
the application's own handler if it had one (it is chained, not replaced), else it takes
the default action, so the process still dies of SIGTERM (exit status 143). An application
that ignores SIGTERM (``SIG_IGN``) keeps ignoring it.

The shutdown does not run inside the handler. A Python signal handler runs on the main
thread between two of its bytecodes, possibly while that thread holds one of the runtime's
locks (a hot-path write's admission, a registry update): a shutdown run there would wait
for that lock forever. So the handler hands the shutdown to a helper thread and returns;
the main thread goes on (and lets go of what it held), and when the shutdown has finished
the helper sends SIGTERM again. The handler, back on the main thread, then chains.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ._supervisor import start_helper

logger = logging.getLogger("spindle")


class SigtermHandler:
    """The installed handler: the shutdown first (on a helper), then the previous handler
    or the default action (on the main thread)."""

    def __init__(self, shutdown: Callable[[], None], previous: Any) -> None:
        self.shutdown = shutdown
        self.previous = previous
        self._lock = threading.Lock()
        self._started = False
        #: Set once the shutdown a SIGTERM started has finished: the next SIGTERM chains.
        self.done = threading.Event()

    def rearm(self, shutdown: Callable[[], None]) -> None:
        """A new launch: the next SIGTERM shuts the new runtime down first."""
        with self._lock:
            self.shutdown = shutdown
            self._started = False
            self.done.clear()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.done.is_set():
            self._chain(signum, frame)
            return
        with self._lock:
            started, self._started = self._started, True
        if started:
            return  # another SIGTERM during the shutdown: the helper's own re-send chains
        logger.warning("spindle: SIGTERM received; running the ordered shutdown")
        start_helper("dbos-sigterm-shutdown", self._run, (signum,))

    def _run(self, signum: int) -> None:
        try:
            self.shutdown()
        except Exception:
            logger.exception("spindle: the shutdown on SIGTERM failed")
        finally:
            self.done.set()
            # Back to the main thread: its handler now chains (only the main thread may).
            os.kill(os.getpid(), signum)

    def _chain(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
            return
        # The default action: restore it and send the signal again, so the process dies of
        # SIGTERM as it would have without us (status 143 in a shell, -15 for Popen).
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_sigterm_handler(shutdown: Callable[[], None]) -> SigtermHandler | None:
    """Install the SIGTERM handler if this is the main thread and SIGTERM is not ignored.

    Returns the handler, or None when nothing was installed. Installing again (a second
    launch) keeps the first handler's chain and rearms it for the new runtime.
    """
    if threading.current_thread() is not threading.main_thread():
        return None  # signal.signal works only there; the app's signals are its own then
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):  # pragma: no cover - no SIGTERM on this platform
        return None
    if previous is signal.SIG_IGN:
        return None
    if isinstance(previous, SigtermHandler):
        previous.rearm(shutdown)
        return previous
    handler = SigtermHandler(shutdown, previous)
    signal.signal(signal.SIGTERM, handler)
    return handler
