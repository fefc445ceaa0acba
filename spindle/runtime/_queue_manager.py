"""The queue threads: one ``dbos-queue-manager`` and, as its children, one worker per queue.

The manager spawns a ``dbos-queue-worker[<name>]`` for every declared queue (and for queues
declared after launch) through the supervisor, with itself as the registry parent, so the
dashboard shows the hierarchy. A worker dequeues what the queue's limits allow and hands
each workflow to the executor (sync) or the background event loop (async).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from spindle.diagnostics import StopEvent, ThreadKind

from ._classes import check_resolvable
from ._core import start_dequeued
from ._errors import (
    DBOSRuntimeShutdownError,
    DBOSSerializationError,
    DBOSWorkflowFunctionNotFoundError,
)
from ._functions import GLOBAL_REGISTRY
from ._queue import GLOBAL_QUEUES, Queue
from ._queue_db import Dequeued, dequeue, probe, requeue, unlimited
from ._queue_delays import probe_due, promote_due
from ._rows import ERROR
from ._supervisor import Supervised
from ._sysdb_gate import SystemDatabaseClosed
from ._workflows import dispatch

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

MANAGER_NAME = "dbos-queue-manager"
#: A failing poll is retried after this long at least (a down database is not hammered).
_ERROR_BACKOFF_SEC = 1.0
#: While this process already runs some of the queue's workflows, an enqueue here waits this
#: long before dequeuing, so a burst of enqueues is taken in one transaction, not one each.
#: An idle worker dequeues at once: latency only grows when there is work in hand.
_COALESCE_SEC = 0.005


def worker_name(queue_name: str) -> str:
    """The readable thread name of a queue's worker."""
    return f"dbos-queue-worker[{queue_name}]"


@dataclass(slots=True)
class _Worker:
    """One queue's worker: its wake event and the workflows it started that still run here."""

    queue: Queue
    wake: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    # Set by an enqueue in this process: the queue is known to hold work, skip the probe.
    hinted: bool = False
    # Set by a finishing workflow that left the executor short of work: dequeue at once.
    refill: bool = False
    thread: Supervised | None = None
    # When (monotonic) this worker next looks for DELAYED workflows that fell due.
    next_delay_check: float = 0.0


class QueueManager:
    """Owns the queue threads of one launched runtime."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        # Serialises spawning with close(): no worker is spawned once shutdown began.
        self._gate = threading.Lock()
        self._closed = False
        self._wake = threading.Event()
        self._ready = threading.Event()
        # Set once ``self.thread`` is assigned: the body needs its own record as the parent.
        self._spawned = threading.Event()
        self._workers: dict[str, _Worker] = {}
        self.thread: Supervised | None = None
        self._unsubscribe = GLOBAL_QUEUES.subscribe(self._on_declared)
        # A worker keeps at most this many of its workflows in flight here, so one process
        # does not take a whole backlog that other processes could share. Three threads'
        # worth waiting beyond the running ones: a refill's dequeue takes 5-10 ms on a busy
        # machine (the worker waits for the GIL like every thread), and with one thread's
        # worth (twice the threads in all) the executor's queue was empty 30-40 % of the
        # time, in flight below the thread count; with three, 2-6 % (bench_scale's queued
        # workload, 5 rounds, the executor's queue sampled every 2 ms).
        self._threads = rt.config.max_executor_threads
        self._local_cap = 4 * self._threads
        # An unlimited queue refills when this few are left in flight: early enough that the
        # executor never runs dry while a dequeue is on its way (at half the cap, the
        # threads idled for that round trip), late enough that a dequeue takes a batch.
        self._refill_at = self._local_cap - max(1, self._threads // 2)

    # -- control (any thread) --------------------------------------------------------------

    def start(self) -> None:
        """Spawn the manager; returns once the workers of the declared queues are spawned."""
        with self._gate:
            if self._closed:
                return
            self.thread = self._rt.supervisor.spawn(ThreadKind.QUEUE, MANAGER_NAME, self._run)
            self._spawned.set()
        # The handshake: launch() returns with every declared queue already being drained.
        while not self._ready.wait(0.1):
            if self.thread.stop.is_set() or not self.thread.thread.is_alive():
                return

    def close(self) -> None:
        """Refuse new workers (called as shutdown begins; phase 2 then signals the threads)."""
        with self._gate:
            self._closed = True
        self._unsubscribe()

    def wake(self, queue_name: str) -> None:
        """An enqueue in this process: the queue's worker polls now, not at its next interval."""
        worker = self._workers.get(queue_name)
        if worker is not None:
            worker.hinted = True
            worker.wake.set()

    def retire(self, queue_name: str) -> None:
        """Stop the worker of a queue no longer declared (``DBOS.delete_queue``): it exits
        at its next look at its stop event; workflows it started run on. Re-declaring the
        queue spawns a new worker."""
        with self._gate:
            worker = self._workers.pop(queue_name, None)
        if worker is not None and worker.thread is not None:
            worker.thread.stop.set()

    def worker_threads(self) -> dict[str, Supervised]:
        """The workers spawned so far, by queue name."""
        return {n: w.thread for n, w in list(self._workers.items()) if w.thread is not None}

    def _on_declared(self, _queue: Queue) -> None:
        self._wake.set()

    # -- the manager thread -----------------------------------------------------------------

    def _run(self, stop: StopEvent) -> None:
        stop.add_callback(self._wake.set)
        self._spawned.wait()
        assert self.thread is not None
        record = self.thread.record
        while not stop.is_set():
            self._wake.clear()
            with self._gate:
                if self._closed or stop.is_set():
                    break
                listening = self._rt.listening_queues
                for queue in GLOBAL_QUEUES.all():
                    if queue.name in self._workers:
                        continue
                    if listening is not None and queue.name not in listening:
                        continue  # DBOS.listen_queues: another process drains it
                    worker = _Worker(queue)
                    worker.thread = self._rt.supervisor.spawn(
                        ThreadKind.QUEUE,
                        worker_name(queue.name),
                        functools.partial(self._work, worker),
                        parent=record,
                    )
                    self._workers[queue.name] = worker
            self._rt.registry.set_status(record, f"{len(self._workers)} queue worker(s)")
            self._ready.set()
            # Woken by a queue declared after launch, or by the stop event's callback.
            self._wake.wait()

    # -- a worker thread --------------------------------------------------------------------

    def _work(self, worker: _Worker, stop: StopEvent) -> None:
        stop.add_callback(worker.wake.set)
        interval = worker.queue.polling_interval_sec
        while not stop.is_set():
            # Cleared before the poll: an enqueue during the poll makes the wait return at once.
            worker.wake.clear()
            timeout = interval
            try:
                more, retry_after = self._poll(worker, stop)
            except SystemDatabaseClosed:
                return  # shutdown (phase 8 interrupted us, or the gate is closed)
            except Exception:
                if stop.is_set():
                    return
                logger.exception("spindle: queue %r: dequeue failed", worker.queue.name)
                more, retry_after = False, None
                timeout = max(interval, _ERROR_BACKOFF_SEC)
            if stop.is_set():
                return
            if more:
                continue  # a full batch: there may be more to take right away
            if retry_after is not None:
                timeout = min(timeout, retry_after + 0.001)
            worker.wake.wait(timeout)

    def _poll(self, worker: _Worker, stop: StopEvent) -> tuple[bool, float | None]:
        rt = self._rt
        queue = worker.queue
        with worker.lock:
            in_flight = worker.in_flight
        free = self._local_cap - in_flight
        if free <= 0:
            return False, None  # a finishing workflow wakes us
        if (
            queue.worker_concurrency is not None
            and not queue.partition_queue  # there the share is per partition
            and in_flight >= queue.worker_concurrency
        ):
            # Our own running workflows fill this process's share; no need to ask.
            return False, None
        if (
            queue.concurrency is None
            and queue.worker_concurrency is None
            and in_flight > self._refill_at
        ):
            # Enough work in hand: refill in batches when some of it is done (a finishing
            # workflow wakes us), not one dequeue transaction per enqueue.
            return False, None
        refill, worker.refill = worker.refill, False
        if worker.hinted and not refill and in_flight > 0 and stop.wait(_COALESCE_SEC):
            # Work in hand: a burst of enqueues is taken in one dequeue, not one each. Waiting
            # only while every thread was busy cost one producer's burst 25-30 % (each small
            # dequeue took the write lock from the enqueues) and gained the 16-producer
            # queued path nothing measurable (bench_scale, side by side). A refill never
            # waits: the executor is running short, and the wait idled its threads (with
            # enqueues going on, every refill was also hinted: in flight fell below the
            # thread count 38 % of the time).
            return False, None
        now = time.monotonic()
        # At most once per polling interval: delays are due at poll granularity (as DBOS).
        check_delayed = now >= worker.next_delay_check
        if check_delayed:
            worker.next_delay_check = now + queue.polling_interval_sec
        hinted, worker.hinted = worker.hinted, False
        version = rt.config.application_version
        # On PostgreSQL an unlimited queue's dequeue (one UPDATE) that finds nothing writes
        # nothing (no row locked, no commit to flush): it is its own probe, and a read
        # first only doubled the statements of every refill. On SQLite it would take the
        # write lock, and a limited queue's dequeue is a counted transaction: an unhinted
        # poll reads first there. Either way the delayed question is asked once per interval.
        own_probe = not rt.sysdb.sqlite and unlimited(queue)
        if own_probe:
            # Only the delayed question, once per interval: the ENQUEUED one as well walked
            # the index entries of rows already dequeued (0.6 ms a probe under the queued
            # load, against 0.3 ms for this one, in pg_stat_statements).
            if check_delayed:
                clock_now = int(rt.clock.now() * 1000)
                if probe_due(rt.sysdb, queue.name, clock_now):
                    promote_due(rt.sysdb, queue.name, clock_now)
        elif check_delayed or not hinted:
            # One read asks both (an idle poll's only statement); a hinted poll knows it
            # has work, and asks at most the delayed question, once per interval.
            clock_now = int(rt.clock.now() * 1000)
            has_work, due = probe(rt.sysdb, queue.name, version, clock_now)
            if due and promote_due(rt.sysdb, queue.name, clock_now):
                has_work = True
            if not hinted and not has_work:
                return False, None
        executor_id = rt.config.executor_id
        result = dequeue(
            rt.sysdb,
            queue,
            executor_id=executor_id,
            application_version=version,
            max_rows=free,
            clock_ms=lambda: int(rt.clock.now() * 1000),
        )
        for i, row in enumerate(result.rows):
            if stop.is_set():
                # Left PENDING for this executor: the next launch puts them back in the queue.
                break
            try:
                self._start(worker, row)
            except SystemDatabaseClosed:
                raise
            except Exception:
                # Never leave dequeued rows PENDING with nobody running them until the next
                # launch: this one and the rest go back to the queue, and the error is raised.
                requeue(rt.sysdb, [r.workflow_id for r in result.rows[i:]], executor_id)
                raise
        return len(result.rows) == free, result.retry_after

    def _start(self, worker: _Worker, row: Dequeued) -> None:
        rt = self._rt
        info = GLOBAL_REGISTRY.workflow(row.name)
        if info is None:
            logger.warning(
                "spindle: queue %r: workflow %s runs %r, which this process has not registered;"
                " it stays PENDING for recovery",
                worker.queue.name,
                row.workflow_id,
                row.name,
            )
            return
        codecs = rt.sysdb.codecs
        try:
            codec = codecs.get(row.serialization)
        except DBOSSerializationError as exc:
            # Written by a serializer this process lacks: as an unregistered function, not
            # run here, it stays PENDING for a process that can read it.
            logger.warning("spindle: queue %r: %s: %s", worker.queue.name, row.workflow_id, exc)
            return
        try:
            args, kwargs = codec.coerce_inputs(
                info.func, codec.decode_inputs(row.inputs) if row.inputs is not None else ((), {})
            )
        except Exception as exc:
            rt.sysdb.finish_workflow(
                row.workflow_id, ERROR, output=None, error=codec.encode_error(exc)
            )
            return
        try:
            check_resolvable(row.workflow_id, args)
        except DBOSWorkflowFunctionNotFoundError as exc:
            # As an unregistered function: not run here, it stays PENDING for recovery.
            logger.warning("spindle: queue %r: %s", worker.queue.name, exc)
            return
        # A first start has nothing to replay; a recovered one reads what it recorded.
        recorded = rt.sysdb.step_outputs(row.workflow_id) if row.recovery_attempts else None
        start = start_dequeued(
            rt,
            info,
            row.workflow_id,
            tuple(args),
            dict(kwargs),
            deadline_ms=row.deadline_epoch_ms,
            recorded=recorded,
            codec=codec,
        )
        if start.run is None:
            return  # already in flight in this process
        with worker.lock:
            worker.in_flight += 1
        start.entry.add_done_callback(functools.partial(self._finished, worker))
        try:
            dispatch(rt, info, start)
        except RuntimeError:
            # The executor or loop is shutting down: the workflow stays PENDING for recovery.
            start.entry.finish(
                error=DBOSRuntimeShutdownError(
                    f"the runtime shut down; workflow {row.workflow_id!r} stays PENDING"
                )
            )
            rt.timeouts.remove(row.workflow_id)
            rt.active.release(start.entry)

    def _finished(self, worker: _Worker) -> None:
        with worker.lock:
            worker.in_flight -= 1
            left = worker.in_flight
        queue = worker.queue
        if queue.concurrency is not None or queue.worker_concurrency is not None:
            # A slot freed in the database: the next workflow may start now.
            worker.wake.set()
        elif left <= self._refill_at:
            # Unlimited queue: refill in batches, not one dequeue transaction per finish.
            worker.refill = True
            worker.wake.set()
