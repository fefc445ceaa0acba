"""A concurrency limit lets exactly that many workflows overlap, and never one more.

The rows are written as another process would (no wake-up), then the worker is woken once:
its single dequeue sees every row, so whether it takes ``limit`` or ``limit + 1`` of them is
decided in that one transaction, and the test reads the answer from the database once the
workflows it did start have reported in (events, never a sleep).
"""

from __future__ import annotations

import queue as stdlib_queue
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from spindle import DBOS, Queue
from spindle.runtime._queue_db import insert_enqueued
from spindle.runtime._schema import workflow_status as ws
from spindle.runtime._serialization import serialize
from tests.runtime.queue_app import Gauge

WAIT = 30.0
# An hour between polls: only the test's explicit wake-up makes the worker dequeue.
overlap_queues = {
    1: Queue("test-overlap-1", concurrency=1, polling_interval_sec=3600),
    2: Queue("test-overlap-2", concurrency=2, polling_interval_sec=3600),
    3: Queue("test-overlap-worker-3", worker_concurrency=3, polling_interval_sec=3600),
}

gauge = Gauge()
arrivals: stdlib_queue.Queue[str] = stdlib_queue.Queue()
releases: dict[str, threading.Event] = {}


@pytest.fixture(autouse=True)
def _reset(dbos: type[DBOS]) -> Iterator[None]:
    # Depends on the launched runtime so that its teardown (releasing held workflows) runs
    # before destroy(): a failing test then costs no join timeout.
    global gauge
    gauge = Gauge()
    releases.clear()
    yield
    for event in list(releases.values()):
        event.set()  # never leave a held workflow blocking an executor thread


@DBOS.workflow()
def overlapping(tag: str) -> str:
    gauge.enter()
    try:
        arrivals.put(tag)
        assert releases[tag].wait(WAIT)
    finally:
        gauge.exit()
    return tag


def _statuses(queue_name: str) -> dict[str, str]:
    with DBOS.runtime.sysdb.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ws.c.workflow_uuid, ws.c.status).where(ws.c.queue_name == queue_name)
        )
        return {r.workflow_uuid: r.status for r in rows}


@pytest.mark.parametrize("limit", sorted(overlap_queues))
def test_exactly_the_limit_overlaps_never_one_more(dbos: type[DBOS], limit: int) -> None:
    """With limit+1 queued, one dequeue starts exactly ``limit``; they run at once (the gauge
    sees them overlap); the last starts only after one finishes."""
    q = overlap_queues[limit]
    tags = [f"{q.name}-{i}" for i in range(limit + 1)]
    for i, tag in enumerate(tags):
        releases[tag] = threading.Event()
        insert_enqueued(
            DBOS.runtime.sysdb,
            workflow_id=tag,
            name=overlapping.__qualname__,
            inputs=serialize(((tag,), {}), "inputs"),
            queue_name=q.name,
            executor_id="other",
            application_version=DBOS.runtime.config.application_version,
            parent_workflow_id=None,
            timeout_ms=None,
            deadline_epoch_ms=None,
            deduplication_id=None,
            priority=i,
        )
    DBOS.runtime.queues.wake(q.name)
    running = {arrivals.get(timeout=WAIT) for _ in range(limit)}
    # All ``limit`` hold their slot at once: the limit is reached, not merely respected.
    assert gauge.now == limit
    statuses = _statuses(q.name)
    assert sorted(statuses.values()).count("ENQUEUED") == 1, statuses
    (waiting,) = (t for t, s in statuses.items() if s == "ENQUEUED")
    assert waiting not in running
    # One finishes: its slot goes to the last one, which now runs beside the others.
    first = sorted(running)[0]
    releases[first].set()
    assert DBOS.retrieve_workflow(first).get_result() == first
    assert arrivals.get(timeout=WAIT) == waiting
    assert gauge.max == limit
    for tag in tags:
        releases[tag].set()
    assert sorted(DBOS.retrieve_workflow(t).get_result() for t in tags) == sorted(tags)
