"""The background asyncio event loop: runs async workflows started from sync code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from spindle.diagnostics import StopEvent, ThreadKind

from ._supervisor import Supervised, Supervisor

T = TypeVar("T")


class BackgroundLoop:
    """An event loop in a supervised thread; ``launch()`` returns once it runs.

    Shutdown phase 4 (``stop_event_loop``) stops it by setting its supervised stop event.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: Supervised | None = None
        self._running = threading.Event()

    def start(self) -> None:
        """Start the loop thread and wait until the loop is running (a handshake, no sleep)."""
        loop = asyncio.new_event_loop()
        self.loop = loop

        def body(stop: StopEvent) -> None:
            asyncio.set_event_loop(loop)
            stop.add_callback(lambda: _call_soon(loop, loop.stop))
            loop.call_soon(self._running.set)
            try:
                loop.run_forever()
            finally:
                _cancel_all(loop)
                loop.close()

        self.thread = self._supervisor.spawn(ThreadKind.EVENT_LOOP, "dbos-event-loop", body)
        self._running.wait()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run a coroutine on the loop from any thread."""
        if self.loop is None or self.thread is None or self.thread.stop.is_set():
            coro.close()
            raise RuntimeError("the background event loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(fn)
