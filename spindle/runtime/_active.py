"""Workflows running in this process: one ID never runs twice at once here."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from ._errors import DBOSAwaitedWorkflowCancelledError, DBOSRuntimeShutdownError
from ._serialization import NATIVE, Codec


class ActiveWorkflow:
    """One workflow ID in flight in this process, and the way to wait for its outcome.

    ``claim()`` decides who runs it: the executor worker it was submitted to, or a thread
    that waits for its result before any worker picked it up. That second path is what
    keeps a bounded executor free of parent/child deadlocks: a parent waiting on an
    unstarted child runs the child itself instead of waiting for a free worker.
    """

    __slots__ = (
        "_callbacks",
        "_claimed",
        "_done_callbacks",
        "_lock",
        "_settled",
        "cancelled",
        "codec",
        "dequeued",
        "done",
        "error",
        "interrupted",
        "is_async",
        "result",
        "runner",
        "wake",
        "workflow_id",
    )

    def __init__(self, workflow_id: str, *, is_async: bool = False) -> None:
        self.workflow_id = workflow_id
        self.is_async = is_async
        self._lock = threading.Lock()
        self._claimed = False
        # Set under _lock by the first outcome (result, error or cancel); later ones are
        # ignored, so what waiters see never changes once one of them could have seen it.
        self._settled = False
        self.runner: Callable[[], None] | None = None
        #: Started by a queue worker, which already scheduled it on the executor.
        self.dequeued = False
        self.done = threading.Event()
        # Set on cancel or shutdown: wakes durable waits (sleep, retry back-off) at once.
        self.wake = threading.Event()
        self.cancelled = False
        self.interrupted = False
        #: The format of this workflow's row: its output and error are written in it.
        self.codec: Codec = NATIVE
        self.result: Any = None
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._done_callbacks: list[Callable[[], None]] = []

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the outcome is known (at once if it already is)."""
        with self._lock:
            if not self.done.is_set():
                self._done_callbacks.append(callback)
                return
        callback()

    def _set_done(self) -> None:
        with self._lock:
            if self.done.is_set():
                return
            self.done.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
        for cb in callbacks:
            cb()

    def claim(self) -> bool:
        """True for the one caller that gets to run this workflow."""
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    def run_if_unclaimed(self) -> None:
        """The executor's task: run unless a waiting thread already took the work."""
        if self.claim() and self.runner is not None:
            self.runner()

    def add_wake_callback(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on cancel or shutdown; returns a function that removes it."""
        with self._lock:
            self._callbacks.append(callback)
            fire = self.wake.is_set()
        if fire:
            callback()

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def _fire_wake(self) -> None:
        self.wake.set()
        with self._lock:
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb()

    def cancel(self) -> bool:
        """Mark cancelled unless an outcome is already published (first outcome wins).

        Waiters get a cancellation error now, the body at its next step. Returns True when
        this call decided the outcome.
        """
        if not self._settle(cancelled=True):
            return False
        self._fire_wake()
        self._set_done()
        return True

    def interrupt(self) -> None:
        """The runtime is shutting down: the body stops at its next durable boundary."""
        self.interrupted = True
        self._fire_wake()

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """Publish the outcome (first outcome wins: a cancel stays a cancel)."""
        if self._settle(result=result, error=error):
            self._set_done()

    def _settle(
        self, *, cancelled: bool = False, result: Any = None, error: BaseException | None = None
    ) -> bool:
        # Decided under the lock, apart from setting ``done``: a cancel racing a finish must
        # not overwrite an outcome whose ``done`` is about to be set (or a waiter has read).
        with self._lock:
            if self._settled:
                return False
            self._settled = True
            self.cancelled = cancelled
            self.result = result
            self.error = error
            return True

    def outcome(self) -> Any:
        """The result, or raise the workflow's error; call after ``done`` is set."""
        if self.cancelled:
            raise DBOSAwaitedWorkflowCancelledError(self.workflow_id)
        if self.error is not None:
            raise self.error
        return self.result


#: Successful outputs kept for handles (:meth:`ActiveWorkflows.finished_output`): the newest
#: this many, each at most FINISHED_MAX_BYTES (a larger one is read from the database).
FINISHED_KEEP = 4096
FINISHED_MAX_BYTES = 64 * 1024


class StartWatch:
    """A handle's wish to hear when its workflow starts here: ``started`` is set once an
    entry for the ID is acquired, and ``entry`` is that entry.

    The entry is handed over, not looked up again: a short workflow may finish and leave
    the table before the woken handle runs, and a second lookup would miss it and read
    the status row back from the database (the queued path's main extra cost).
    """

    __slots__ = ("entry", "started")

    def __init__(self) -> None:
        self.started = threading.Event()
        self.entry: ActiveWorkflow | None = None


class ActiveWorkflows:
    """The table of in-flight workflow IDs, with an event for "none left"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, ActiveWorkflow] = {}
        # Handles waiting for a workflow not (yet) in flight here, by ID: set when it starts
        # here (a queued workflow this process dequeues), so they wait on it, not poll.
        self._watchers: dict[str, list[StartWatch]] = {}
        # The recorded output of workflows that succeeded here lately, for their handles: a
        # handle made by enqueue is usually asked for its result after the run finished,
        # and without this it read the row back in a transaction of its own. Only SUCCESS
        # is kept because only SUCCESS is final: resume and requeue skip SUCCESS rows (as
        # DBOS), while an error or a cancel can be resumed from any process. A new run of
        # the ID here (acquire) and this process's delete / GC drop the entry.
        self._finished: OrderedDict[str, bytes] = OrderedDict()
        #: Grows whenever an outcome this process saw is not (or no longer) in the kept
        #: outputs: an error, a cancel, an output too large, an eviction, a forget. A
        #: handle that read it before its enqueue and finds it unchanged knows its
        #: workflow has not finished here unseen (see WorkflowHandle._poll_result).
        self.forgotten = 0
        self.idle = threading.Event()
        self.idle.set()

    def remember_success(self, workflow_id: str, output: bytes) -> None:
        """Keep a just-recorded SUCCESS output; call before the entry is released, so a
        handle that no longer finds the entry finds the output."""
        if len(output) > FINISHED_MAX_BYTES:
            return
        with self._lock:
            self._finished[workflow_id] = output
            self._finished.move_to_end(workflow_id)
            if len(self._finished) > FINISHED_KEEP:
                self._finished.popitem(last=False)
                self.forgotten += 1

    def finished_output(self, workflow_id: str) -> bytes | None:
        """The recorded output of a workflow that succeeded here lately, if kept."""
        with self._lock:
            return self._finished.get(workflow_id)

    def forget_finished(self, workflow_ids: Iterable[str] | None = None) -> None:
        """Drop kept outputs (all of them with None): their rows are being deleted."""
        with self._lock:
            self.forgotten += 1
            if workflow_ids is None:
                self._finished.clear()
                return
            for workflow_id in workflow_ids:
                self._finished.pop(workflow_id, None)

    def acquire(self, workflow_id: str, *, is_async: bool) -> tuple[ActiveWorkflow, bool]:
        """The entry for this ID and True if the caller created it (and must run it)."""
        with self._lock:
            entry = self._by_id.get(workflow_id)
            if entry is not None:
                return entry, False
            entry = ActiveWorkflow(workflow_id, is_async=is_async)
            self._by_id[workflow_id] = entry
            if self._finished:
                self._finished.pop(workflow_id, None)  # a new run: its outcome is the news
            self.idle.clear()
            watchers = self._watchers.pop(workflow_id, None) if self._watchers else None
        if watchers is not None:
            for watch in watchers:
                # The entry before the event: a woken waiter reads it without the lock.
                watch.entry = entry
                watch.started.set()
        return entry, True

    def release(self, entry: ActiveWorkflow) -> None:
        """Forget a finished entry."""
        with self._lock:
            if self._by_id.get(entry.workflow_id) is entry:
                del self._by_id[entry.workflow_id]
            if entry.workflow_id not in self._finished:
                self.forgotten += 1  # its outcome leaves with it
            if not self._by_id:
                self.idle.set()

    def watch(self, workflow_id: str, watch: StartWatch) -> ActiveWorkflow | None:
        """The in-flight entry for this ID; if there is none, ``watch`` is given the next
        entry acquired for it (checked and registered under one lock: a start in between
        is not missed). Undo with :meth:`unwatch`."""
        with self._lock:
            entry = self._by_id.get(workflow_id)
            if entry is None:
                watches = self._watchers.setdefault(workflow_id, [])
                if watch not in watches:
                    watches.append(watch)
            return entry

    def unwatch(self, workflow_id: str, watch: StartWatch) -> None:
        """Stop watching (a no-op if the watch already fired)."""
        with self._lock:
            watches = self._watchers.get(workflow_id)
            if watches is not None and watch in watches:
                watches.remove(watch)
                if not watches:
                    del self._watchers[workflow_id]

    def get(self, workflow_id: str) -> ActiveWorkflow | None:
        """The in-flight entry for this ID, if any."""
        with self._lock:
            return self._by_id.get(workflow_id)

    def all(self) -> list[ActiveWorkflow]:
        """Every in-flight entry."""
        with self._lock:
            return list(self._by_id.values())

    def interrupt_all(self) -> None:
        """Shutdown: wake every durable wait and fail every waiter with a shutdown error."""
        for entry in self.all():
            entry.interrupt()
            entry.finish(
                error=DBOSRuntimeShutdownError(
                    f"the runtime shut down; workflow {entry.workflow_id!r} stays PENDING"
                )
            )
