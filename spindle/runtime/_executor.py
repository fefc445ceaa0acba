"""The executor: a bounded ThreadPoolExecutor whose workers register as they start.

Its workers are daemon threads, unlike the standard library's: ``concurrent.futures`` joins
every worker it made at interpreter exit, so one user step that never returns (a
``time.sleep(1e9)``, a socket without a timeout) would hold the process forever after
``destroy()`` reported it leaked. Interpreter exit still lets a running workflow stop first:
the runtime's exit hook runs ``destroy()``, which interrupts workflows and joins workers
with its timeout.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import thread as _futures_thread
from typing import Any

from spindle.diagnostics import ThreadGroup, ThreadKind, ThreadRecord, ThreadRegistry

from ._supervisor import start_pool_worker

#: The standard library's worker loop, when its signature is the one this module knows
#: (``_worker(executor_reference, work_queue, initializer, initargs)``, CPython 3.11's);
#: otherwise the pool makes the standard (non-daemon) workers, as before (and a stuck step
#: holds the exit again: tests/runtime/test_exit.py fails then).
_WORKER: Any = getattr(_futures_thread, "_worker", None)
if _WORKER is not None and list(inspect.signature(_WORKER).parameters) != [
    "executor_reference",
    "work_queue",
    "initializer",
    "initargs",
]:
    _WORKER = None

THREAD_PREFIX = "dbos-executor-"


class DBOSExecutor(ThreadPoolExecutor):
    """Runs sync workflows. Each worker names itself ``dbos-executor-N`` and registers
    in the registry as it starts; its exit is observed when shutdown joins it."""

    def __init__(self, max_workers: int, registry: ThreadRegistry) -> None:
        self._registry = registry
        self._numbers = itertools.count(1)
        self._records_lock = threading.Lock()
        self.records: list[tuple[threading.Thread, ThreadRecord]] = []
        super().__init__(
            max_workers=max_workers,
            thread_name_prefix=THREAD_PREFIX.rstrip("-"),
            initializer=self._register_worker,
        )

    def _adjust_thread_count(self) -> None:
        """Start a worker if none is idle and the bound allows: a daemon thread, kept out of
        ``concurrent.futures``' exit-time join (see the module docstring)."""
        if _WORKER is None:
            super()._adjust_thread_count()
            return
        if self._idle_semaphore.acquire(timeout=0):
            return
        work_queue = self._work_queue

        def wake_on_collect(_ref: object, q: Any = work_queue) -> None:
            q.put(None)  # the executor was garbage-collected: let the worker exit

        threads: Any = self._threads  # a set, typed read-only by typeshed
        if len(threads) < self._max_workers:
            initializer = self._initializer
            initargs = self._initargs
            ref = weakref.ref(self, wake_on_collect)
            name = f"{THREAD_PREFIX.rstrip('-')}_{len(threads)}"  # renamed by _register_worker
            threads.add(start_pool_worker(name, _WORKER, (ref, work_queue, initializer, initargs)))

    def _register_worker(self) -> None:
        thread = threading.current_thread()
        thread.name = f"{THREAD_PREFIX}{next(self._numbers)}"
        record = self._registry.adopt_current_thread(
            kind=ThreadKind.EXECUTOR, group=ThreadGroup.EXECUTOR
        )
        # A pool thread: between workflows (no ``work`` on its record) it shows as idle.
        record.pooled = True
        with self._records_lock:
            self.records.append((thread, record))

    def pool_threads(self) -> list[threading.Thread]:
        """Every worker thread the pool started, registered yet or not."""
        threads: Any = self._threads
        return list(threads)

    def worker_records(self) -> list[tuple[threading.Thread, ThreadRecord]]:
        """Every worker made so far, with its registry record."""
        with self._records_lock:
            return list(self.records)
