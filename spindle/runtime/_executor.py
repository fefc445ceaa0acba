"""The executor: a bounded ThreadPoolExecutor whose workers register as they start."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

from spindle.diagnostics import ThreadGroup, ThreadKind, ThreadRecord, ThreadRegistry

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

    def worker_records(self) -> list[tuple[threading.Thread, ThreadRecord]]:
        """Every worker made so far, with its registry record."""
        with self._records_lock:
            return list(self.records)
