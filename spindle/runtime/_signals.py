"""SIGTERM runs the ordered shutdown: what ``docker stop``, systemd and Kubernetes send.

Without a handler Python dies of SIGTERM at once: no phase runs, no timeline, no report.
At ``launch()`` on the main thread (``handle_signals``, default on) a handler is installed
that runs ``destroy()`` and then does what would have happened without Spindle: it calls
the application's own handler if it had one (it is chained, not replaced), else it takes
the default action, so the process still dies of SIGTERM (exit status 143). An application
that ignores SIGTERM (``SIG_IGN``) keeps ignoring it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("spindle")

Handler = Callable[[int, FrameType | None], Any]


class SigtermHandler:
    """The installed handler: ``shutdown()`` first, then the previous handler or the default.

    ``shutdown`` returns False when it could not run the shutdown now because this very
    thread is in the middle of it (the signal arrived during ``destroy()`` on the main
    thread): :meth:`after_shutdown` then finishes the job once that ``destroy()`` returns.
    """

    def __init__(self, shutdown: Callable[[], bool], previous: Any) -> None:
        self._shutdown = shutdown
        self.previous = previous
        #: A SIGTERM arrived while this thread ran destroy(): act on it when that returns.
        self.deferred: tuple[int, FrameType | None] | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        logger.warning("spindle: SIGTERM received; running the ordered shutdown")
        try:
            done = self._shutdown()
        except Exception:
            logger.exception("spindle: the shutdown on SIGTERM failed")
            done = True
        if not done:
            self.deferred = (signum, frame)
            return
        self._chain(signum, frame)

    def after_shutdown(self) -> None:
        """Act on a SIGTERM deferred while destroy() ran on this thread (main thread only)."""
        deferred, self.deferred = self.deferred, None
        if deferred is not None:
            self._chain(*deferred)

    def _chain(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
            return
        # The default action: restore it and send the signal again, so the process dies of
        # SIGTERM as it would have without us (status 143 in a shell, -15 for Popen).
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_sigterm_handler(shutdown: Callable[[], bool]) -> SigtermHandler | None:
    """Install the SIGTERM handler if this is the main thread and SIGTERM is not ignored.

    Returns the handler, or None when nothing was installed. Installing twice (a second
    launch) keeps the first handler's chain.
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
        previous._shutdown = shutdown  # a relaunch: the same chain, the new runtime
        return previous
    handler = SigtermHandler(shutdown, previous)
    signal.signal(signal.SIGTERM, handler)
    return handler
