"""Queue apps for child processes: crash recovery (killed with -9) and two-process draining."""

from __future__ import annotations

import os
import sys
import threading
import time

import sqlalchemy as sa

from spindle import DBOS, Queue, SetWorkflowID
from spindle.runtime._queue_db import insert_enqueued
from spindle.runtime._schema import workflow_status as ws
from spindle.runtime._serialization import serialize
from spindle.runtime._sysdb import SystemDatabase

# Child processes poll fast (a process that enqueued nothing learns of work only by polling);
# imported by the test process, where every launch drains these too, they poll at DBOS's 1 s.
_POLL = float(os.environ.get("SPINDLE_QUEUE_APP_POLL", "1.0"))
RECOVERY_CONCURRENCY = 2
recovery_queue = Queue("recovery-q", concurrency=RECOVERY_CONCURRENCY, polling_interval_sec=_POLL)
drain_queue = Queue("drain-q", polling_interval_sec=_POLL)
GLOBAL_CONCURRENCY = 3
shared_queue = Queue("shared-q", concurrency=GLOBAL_CONCURRENCY, polling_interval_sec=_POLL)

_arrived = threading.Semaphore(0)


class Gauge:
    """How many workflows run at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.max = 0

    def enter(self) -> None:
        """One more runs."""
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def exit(self) -> None:
        """One fewer runs."""
        with self._lock:
            self.now -= 1


recovery_gauge = Gauge()


def enqueue_row(
    sysdb: SystemDatabase,
    queue_name: str,
    workflow_id: str,
    *,
    priority: int = 0,
    timeout_ms: int | None = None,
    application_version: str = "0",
) -> None:
    """An ENQUEUED row written as another app's process would (no wake-up of a worker)."""
    insert_enqueued(
        sysdb,
        workflow_id=workflow_id,
        name="elsewhere",
        inputs=serialize(((), {}), "inputs"),
        queue_name=queue_name,
        executor_id="other",
        application_version=application_version,
        parent_workflow_id=None,
        timeout_ms=timeout_ms,
        deadline_epoch_ms=None,
        deduplication_id=None,
        priority=priority,
    )


def log_effect(line: str, *, durable: bool = True) -> None:
    """Append a side effect to the effects file (fsynced when a crash must not lose it)."""
    fd = os.open(os.environ["SPINDLE_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


@DBOS.step()
def queued_step(workflow_id: str, i: int) -> int:
    log_effect(f"{workflow_id}:{i}")
    if i == 2 and os.environ.get("SPINDLE_BLOCK") == "1":
        _arrived.release()
        threading.Event().wait()  # the parent kills us here, mid-workflow
    return i


@DBOS.workflow()
def queued_workflow() -> int:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    recovery_gauge.enter()
    try:
        total = sum(queued_step(workflow_id, i) for i in (1, 2, 3))
    finally:
        recovery_gauge.exit()
    log_effect(f"{workflow_id}:done")
    return total


@DBOS.step()
def drain_step(i: int, step: int) -> int:
    log_effect(f"{DBOS.workflow_id}:{step}", durable=False)
    return i + 1


@DBOS.workflow()
def drain_workflow(i: int) -> int:
    return drain_step(drain_step(drain_step(i, 1), 2), 3) - 3


@DBOS.workflow()
def overlap_workflow(i: int) -> int:
    """Logs its start and end on the system-wide monotonic clock; works ~20 ms between."""
    log_effect(f"S:{time.monotonic_ns()}:{DBOS.workflow_id}", durable=False)
    threading.Event().wait(0.02)  # the work a workflow does, so runs would overlap
    log_effect(f"E:{time.monotonic_ns()}:{DBOS.workflow_id}", durable=False)
    return i


QUEUES = {"drain": (drain_queue, drain_workflow), "shared": (shared_queue, overlap_workflow)}


def _config(url: str, executor_id: str) -> None:
    DBOS(
        config={
            "name": "queue-app",
            "system_database_url": url,
            "run_admin_server": False,
            "executor_id": executor_id,
            "max_executor_threads": 8,
        }
    )


def crash(url: str, count: int) -> None:
    """Enqueue ``count`` workflows, say READY once the queue's limit of them are inside
    step 2 (the rest wait ENQUEUED), then wait to be killed."""
    _config(url, "local")
    DBOS.launch()
    for i in range(count):
        with SetWorkflowID(f"qrec-{i}"):
            recovery_queue.enqueue(queued_workflow)
    for _ in range(min(count, RECOVERY_CONCURRENCY)):
        _arrived.acquire()
    print("READY", flush=True)
    threading.Event().wait()


def drain(url: str, which: str, executor_id: str, count: int, enqueue: bool) -> None:
    """Launch, say READY, optionally enqueue ``count`` workflows on the ``which`` queue, and
    run until it holds ``count`` finished workflows."""
    queue, workflow = QUEUES[which]
    _config(url, executor_id)
    DBOS.launch()
    print("READY", flush=True)
    if enqueue:
        for i in range(count):
            with SetWorkflowID(f"{which}-{i}"):
                queue.enqueue(workflow, i)
    done = sa.select(sa.func.count()).where(ws.c.queue_name == queue.name, ws.c.status == "SUCCESS")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    waiter = threading.Event()
    try:
        while True:
            with engine.connect() as conn:
                if conn.execute(done).scalar() == count:
                    break
            waiter.wait(0.1)  # a child process watching the database, not a test body
    finally:
        engine.dispose()
    DBOS.destroy()
    print("DONE", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "crash":
        crash(sys.argv[2], int(sys.argv[3]))
    else:
        drain(sys.argv[2], sys.argv[1], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "enqueue")
