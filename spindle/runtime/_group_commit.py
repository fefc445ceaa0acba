"""Group commit: writers that queue for SQLite's one write lock share the next commit.

SQLite has one writer at a time and every commit of ours is fsynced (``synchronous=FULL``).
With many executor threads each writing one small checkpoint, the cost was never the
statements: it was one fsync and one hand-off of the write lock (a wake-up, the GIL) per
statement. Here a writer that finds nobody committing becomes the *leader*: it runs its own
statement and every statement that queued meanwhile in one transaction, commits once, and
wakes each writer with its own outcome. A writer that finds a leader at work queues and
sleeps on its own lock. Nobody waits for a batch to fill: a batch is whatever queued while
the previous one was committing, so a lone writer commits alone, at once.

Each writer still returns only after *its* row is durable (the COMMIT that held it came
back), and each statement keeps its own outcome: a constraint violation aborts that one
statement in SQLite, not the transaction, so one writer's conflict never fails another's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class WriteRequest:
    """One writer's statement, waiting in (or run by) a batch."""

    __slots__ = ("_wake", "done", "error", "fetch", "lead", "params", "rowcount", "rows", "sql")

    def __init__(self, sql: str, params: tuple[Any, ...], fetch: bool = False) -> None:
        self.sql = sql
        self.params = params
        #: Whether the statement returns rows (``RETURNING``) the writer wants.
        self.fetch = fetch
        self.rowcount = -1
        self.rows: list[Any] = []
        self.error: BaseException | None = None
        self.done = False
        #: Set when the writer is woken to lead the next batch rather than with its outcome.
        self.lead = False
        # A plain lock, held from birth and released once: cheaper than an Event to wait on.
        self._wake = threading.Lock()
        self._wake.acquire()

    def succeed(self, rowcount: int, rows: list[Any] | None = None) -> None:
        """Record the statement's row count and rows (once its batch has committed)."""
        self.rowcount = rowcount
        self.rows = rows or []
        self.error = None
        self.done = True

    def fail(self, error: BaseException) -> None:
        """Record the statement's failure."""
        self.error = error
        self.done = True

    def outcome(self) -> WriteRequest:
        """This request, done; or raise the recorded error."""
        if self.error is not None:
            raise self.error
        return self


#: Runs one batch: ``take()`` returns the statements queued so far (call it once, when ready
#: to execute: writers queueing until then join this batch); every one taken must end with
#: ``succeed()`` or ``fail()``, all of them after the commit that makes them durable.
BatchRunner = Callable[[Callable[[], list[WriteRequest]]], None]


class GroupCommit:
    """Queues writers and lets one of them at a time commit a batch for all of them."""

    def __init__(self, run_batch: BatchRunner) -> None:
        self._run_batch = run_batch
        self._lock = threading.Lock()
        self._queue: list[WriteRequest] = []
        self._leading = False
        #: Batches committed and the statements in them (the tests read them).
        self.batches = 0
        self.statements = 0

    def submit(self, sql: str, params: tuple[Any, ...], *, fetch: bool = False) -> WriteRequest:
        """Run one write statement durably; returns it done, or raises its error."""
        request = WriteRequest(sql, params, fetch)
        with self._lock:
            self._queue.append(request)
            lead = not self._leading
            self._leading = True
        if not lead:
            # Woken exactly once: with the outcome, or to lead (the previous leader left
            # this request first in the queue, so the batch it leads holds it).
            request._wake.acquire()
            if not request.lead:
                return request.outcome()
        self._lead(request)
        return request.outcome()

    def _lead(self, mine: WriteRequest) -> None:
        taken: list[WriteRequest] = []

        def take() -> list[WriteRequest]:
            with self._lock:
                batch, self._queue = self._queue, []
            taken.extend(batch)
            return batch

        try:
            self._run_batch(take)
        except BaseException as exc:
            # The runner must finish every request it took; if it broke off instead, none of
            # them may hang. A request it never took stays queued for the next leader, unless
            # it is ours: then we take the queue to fail it, as the batch it would have been.
            if not taken:
                take()
            for request in taken:
                if not request.done:
                    request.fail(exc)
        finally:
            with self._lock:
                self.batches += 1
                self.statements += len(taken)
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.lead = True
                else:
                    self._leading = False
            for request in taken:
                if request is not mine:
                    request._wake.release()
            if successor is not None:
                successor._wake.release()
