"""Queues: limits, rate limiter, priority, deduplication, threads, recovery (both backends)."""

from __future__ import annotations

import collections
import functools
import os
import queue as stdlib_queue
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import (
    DBOS,
    DBOSException,
    DBOSQueueDeduplicatedError,
    Queue,
    SetEnqueueOptions,
    SetWorkflowID,
    SetWorkflowTimeout,
)
from spindle.diagnostics import EventType, JoinOutcome, ThreadKind
from spindle.runtime._queue import GLOBAL_QUEUES
from spindle.runtime._queue_db import dequeue, has_enqueued, probe
from spindle.runtime._queue_manager import MANAGER_NAME, worker_name
from spindle.runtime._schema import workflow_status as ws
from tests._waits import wait_until_in
from tests.conftest import MakeDBOS
from tests.runtime import queue_app
from tests.runtime.queue_app import Gauge, enqueue_row, queued_workflow, recovery_gauge

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0  # generous bound on every wait for an event; a hang fails instead of blocking

concurrency_queue = Queue("test-concurrency", concurrency=3)
worker_queue = Queue("test-worker-concurrency", worker_concurrency=2)
limited_queue = Queue("test-limited", limiter={"limit": 3, "period": 0.4})
priority_queue = Queue("test-priority", concurrency=1, priority_enabled=True)
dedup_queue = Queue("test-dedup")
# An hour between polls: only the wake-up of an enqueue can start its workflows in time.
lazy_queue = Queue("test-lazy", polling_interval_sec=3600)
# Workers that poll hourly, so a test can dequeue by hand: one queue without limits (one
# statement), one with a limit (the counted transaction).
parked_limited_queue = Queue("test-parked-limited", concurrency=100, polling_interval_sec=3600)
unlimited_priority_queue = Queue(
    "test-unlimited-priority", priority_enabled=True, polling_interval_sec=3600
)

# concurrency=1 per partition: each partition runs one workflow at a time.
partitioned_queue = Queue("test-partitioned", concurrency=1, partition_queue=True)
# The same, as this process's share: worker_concurrency=1 per partition.
partitioned_worker_queue = Queue(
    "test-partitioned-worker", worker_concurrency=1, partition_queue=True
)

gauge = Gauge()
partition_gauges: dict[str, Gauge] = collections.defaultdict(Gauge)
release = threading.Event()
arrivals: stdlib_queue.Queue[str] = stdlib_queue.Queue()
order: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    global gauge
    gauge = Gauge()
    partition_gauges.clear()
    release.clear()
    order.clear()
    while not arrivals.empty():
        arrivals.get_nowait()
    yield
    release.set()  # never leave a held workflow blocking an executor thread


def arrived(n: int) -> list[str]:
    """Wait for ``n`` workflows to report that they run."""
    return [arrivals.get(timeout=WAIT) for _ in range(n)]


@DBOS.workflow()
def q_held(tag: str) -> str:
    """Runs until ``release`` is set, counted by the gauge."""
    gauge.enter()
    try:
        order.append(tag)
        arrivals.put(tag)
        assert release.wait(WAIT)
    finally:
        gauge.exit()
    return tag


@DBOS.workflow()
def q_partitioned(tag: str) -> str:
    """As q_held, also counted by its partition's gauge (the tag's first letter)."""
    part = partition_gauges[tag[0]]
    part.enter()
    gauge.enter()
    try:
        arrivals.put(tag)
        assert release.wait(WAIT)
    finally:
        gauge.exit()
        part.exit()
    return tag


@DBOS.step()
def add_one(x: int) -> int:
    return x + 1


@DBOS.workflow()
def q_quick(x: int) -> int:
    arrivals.put(str(x))
    return add_one(x)


@DBOS.workflow()
async def q_quick_async(x: int) -> int:
    return x * 2


@DBOS.workflow()
def q_fan_out(n: int) -> int:
    handles = [dedup_queue.enqueue(q_quick, i) for i in range(n)]
    return sum(h.get_result() for h in handles)


def started_at(queue_name: str) -> list[int]:
    """The recorded start times (epoch ms) of a queue's workflows, sorted."""
    with DBOS.runtime.sysdb.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ws.c.started_at_epoch_ms).where(ws.c.queue_name == queue_name)
        ).all()
    return sorted(r[0] for r in rows)


# -- declaration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": ""}, "name"),
        ({"name": "x", "concurrency": 0}, "concurrency"),
        ({"name": "x", "concurrency": 1.5}, "concurrency"),
        ({"name": "x", "worker_concurrency": -1}, "worker_concurrency"),
        ({"name": "x", "worker_concurrency": 0.5}, "worker_concurrency"),
        ({"name": "x", "concurrency": 2, "worker_concurrency": 3}, "worker_concurrency"),
        ({"name": "x", "limiter": {"limit": 0, "period": 1}}, "limit"),
        ({"name": "x", "limiter": {"limit": 1, "period": 0}}, "period"),
        ({"name": "x", "limiter": {"limit": 1}}, "limiter"),
        ({"name": "x", "priority_enabled": "yes"}, "priority_enabled"),
        ({"name": "x", "polling_interval_sec": 0}, "polling_interval_sec"),
        ({"name": "x", "partition_queue": 1}, "partition_queue"),
    ],
)
def test_bad_queue_arguments_raise_value_error_naming_them(
    kwargs: dict[str, Any], argument: str
) -> None:
    """A bad constructor argument raises ValueError naming it, and declares nothing."""
    with pytest.raises(ValueError, match=argument):
        Queue(**kwargs)
    assert GLOBAL_QUEUES.get("x") is None


def test_duplicate_queue_name_is_rejected() -> None:
    """Two queues cannot share a name (as DBOS)."""
    with pytest.raises(ValueError, match="already declared"):
        Queue("test-concurrency")
    assert DBOS.retrieve_queue("test-concurrency") is concurrency_queue
    assert DBOS.retrieve_queue("never-declared") is None  # as DBOS for an unknown name


def test_bad_enqueue_options_raise_value_error() -> None:
    """Priorities run from 1 to 2**31 - 1; a deduplication ID is a non-empty string."""
    with pytest.raises(ValueError, match="priority"):
        SetEnqueueOptions(priority=0)
    with pytest.raises(ValueError, match="deduplication_id"):
        SetEnqueueOptions(deduplication_id="")


# -- running --------------------------------------------------------------------------------


def test_enqueue_returns_handles_sync_and_async(dbos: type[DBOS]) -> None:
    """enqueue and enqueue_async return handles to the results; status shows the queue."""
    import asyncio

    handle = dedup_queue.enqueue(q_quick, 41)
    assert handle.get_result() == 42
    status = handle.get_status()
    assert (status.status, status.queue_name) == ("SUCCESS", "test-dedup")

    async def main() -> int:
        h = await dedup_queue.enqueue_async(q_quick_async, 21)
        result: int = await h.get_result()
        return result

    assert asyncio.run(main()) == 42


def test_enqueue_inside_workflow_and_wait_for_children(dbos: type[DBOS]) -> None:
    """A workflow enqueues children and waits for them (DBOS's fan-out pattern)."""
    assert DBOS.start_workflow(q_fan_out, 5).get_result() == sum(range(1, 6))
    children = DBOS.list_workflows(name="q_quick")
    assert len(children) == 5
    assert {c.parent_workflow_id for c in children} == {
        DBOS.list_workflows(name="q_fan_out")[0].workflow_id
    }


# Keyed events a queued workflow sets (its arguments must be storable: a key, not an Event).
_SIGNALS: dict[str, threading.Event] = {}


@DBOS.workflow()
def q_fails_unwatched(key: str) -> None:
    _SIGNALS[key].set()
    raise ValueError("failed before anyone waited")


def test_a_handle_waited_on_after_its_workflow_failed_unseen_reads_the_row_at_once(
    dbos: type[DBOS],
) -> None:
    """A handle made by an enqueue skips its first status read (the row was just written
    ENQUEUED, and a start here wakes it), unless an outcome left this process's memory
    since: a failure keeps no output here, so a handle waited on after its workflow failed
    must read the row, not wait out a poll delay for a start that already happened (waited
    on in order, 4,800 handles of one producer ran at 60 workflows/s)."""
    key = str(uuid.uuid4())
    started = _SIGNALS[key] = threading.Event()
    handle = dedup_queue.enqueue(q_fails_unwatched, key)
    assert started.wait(WAIT)
    assert DBOS.runtime.active.idle.wait(WAIT)  # it finished and left the in-flight table
    handle._first_delay = 3600.0  # a wait for the watch would outlast WAIT
    outcome: stdlib_queue.Queue[BaseException | None] = stdlib_queue.Queue()

    def wait() -> None:
        try:
            handle.get_result()
        except BaseException as exc:
            outcome.put(exc)
        else:
            outcome.put(None)

    # A daemon: if the handle does wait out its hour, the failing run can still exit.
    waiter = threading.Thread(target=wait, name="test-waiter", daemon=True)
    waiter.start()
    waiter.join(WAIT)
    assert not waiter.is_alive(), "the handle waited for a start that had already happened"
    error = outcome.get_nowait()
    assert isinstance(error, ValueError)
    assert "before anyone waited" in str(error)


def test_same_workflow_id_enqueued_twice_runs_once(dbos: type[DBOS]) -> None:
    """Enqueuing an ID again returns the same workflow (idempotent)."""
    with SetWorkflowID("same-id"):
        first = dedup_queue.enqueue(q_quick, 1)
    with SetWorkflowID("same-id"):
        second = dedup_queue.enqueue(q_quick, 1)
    assert first.get_result() == second.get_result() == 2
    assert len(DBOS.list_workflows(workflow_ids=["same-id"])) == 1
    assert arrived(1) == ["1"]
    assert arrivals.empty()


def test_enqueue_wakes_the_worker_at_once(dbos: type[DBOS]) -> None:
    """A worker polling hourly starts an enqueued workflow at once: enqueue wakes it."""
    handles = [lazy_queue.enqueue(q_quick, i) for i in range(3)]
    assert sorted(arrived(3)) == ["0", "1", "2"]
    assert [h.get_result() for h in handles] == [1, 2, 3]


def test_register_queue_after_launch_gets_a_worker(dbos: type[DBOS]) -> None:
    """DBOS.register_queue on a launched runtime spawns that queue's worker and drains it."""
    name = f"test-late-{uuid.uuid4().hex[:8]}"
    late = DBOS.register_queue(name, worker_concurrency=1)
    assert DBOS.retrieve_queue(name) is late
    assert late.enqueue(q_quick, 7).get_result() == 8


def test_global_concurrency_is_never_exceeded(dbos: type[DBOS]) -> None:
    """concurrency=3: at most 3 of 10 run at once, and 3 do."""
    handles = [concurrency_queue.enqueue(q_held, f"c{i}") for i in range(10)]
    arrived(3)
    pending = DBOS.list_workflows(status="PENDING")
    assert len(pending) == 3
    assert len(DBOS.list_workflows(status="ENQUEUED")) == 7
    release.set()
    assert sorted(h.get_result() for h in handles) == sorted(f"c{i}" for i in range(10))
    assert gauge.max == 3


def test_worker_concurrency_is_never_exceeded(dbos: type[DBOS]) -> None:
    """worker_concurrency=2: at most 2 run at once in this process, and 2 do."""
    handles = [worker_queue.enqueue(q_held, f"w{i}") for i in range(8)]
    arrived(2)
    assert len(DBOS.list_workflows(status="PENDING")) == 2
    release.set()
    assert len([h.get_result() for h in handles]) == 8
    assert gauge.max == 2


@pytest.mark.slow
def test_rate_limiter_caps_starts_per_period(dbos: type[DBOS]) -> None:
    """limit 3 per 0.4 s: no 0.4 s window holds more than 3 recorded starts."""
    handles = [limited_queue.enqueue(q_quick, i) for i in range(9)]
    assert [h.get_result() for h in handles] == list(range(1, 10))
    starts = started_at("test-limited")
    assert len(starts) == 9
    for i in range(len(starts) - 3):
        assert starts[i + 3] - starts[i] >= 400, starts


def test_priority_orders_dequeue(dbos: type[DBOS]) -> None:
    """With priority_enabled, lower numbers start first; equal priorities in FIFO order."""
    blocker = priority_queue.enqueue(q_held, "blocker")
    assert arrived(1) == ["blocker"]
    handles = []
    for tag, prio in [("p5", 5), ("p1", 1), ("p3a", 3), ("p2", 2), ("p3b", 3)]:
        with SetEnqueueOptions(priority=prio):
            handles.append(priority_queue.enqueue(q_held, tag))
    release.set()
    assert blocker.get_result() == "blocker"
    for h in handles:
        h.get_result()
    assert order == ["blocker", "p1", "p2", "p3a", "p3b", "p5"]
    assert gauge.max == 1


@pytest.mark.parametrize("limit", ["concurrency", "worker_concurrency"])
def test_partitioned_queue_limits_each_partition_on_its_own(dbos: type[DBOS], limit: str) -> None:
    """partition_queue=True with a limit of 1: one workflow of each partition runs at once,
    never two of one partition; the partition key is on the status."""
    queue = partitioned_queue if limit == "concurrency" else partitioned_worker_queue
    tags = ["a1", "b1", "a2", "b2", "a3", "b3"]
    handles = []
    for tag in tags:
        with SetEnqueueOptions(queue_partition_key=tag[0]):
            handles.append(queue.enqueue(q_partitioned, tag))
    assert sorted(t[0] for t in arrived(2)) == ["a", "b"]
    waiting = DBOS.list_queued_workflows(queue_name=queue.name, status="ENQUEUED")
    assert len(waiting) == 4
    release.set()
    assert [h.get_result() for h in handles] == tags
    assert (partition_gauges["a"].max, partition_gauges["b"].max, gauge.max) == (1, 1, 2)
    assert [h.get_status().queue_partition_key for h in handles] == [t[0] for t in tags]


def test_partition_keys_belong_to_partitioned_queues(dbos: type[DBOS]) -> None:
    """A partitioned queue needs a key, another queue refuses one, and a key does not
    combine with deduplication (as DBOS): clear errors, nothing enqueued."""
    with pytest.raises(DBOSException, match="is partitioned"):
        partitioned_queue.enqueue(q_quick, 1)
    with (
        SetEnqueueOptions(queue_partition_key="a"),
        pytest.raises(DBOSException, match="not partitioned"),
    ):
        dedup_queue.enqueue(q_quick, 1)
    with pytest.raises(ValueError, match="deduplication"):
        SetEnqueueOptions(queue_partition_key="a", deduplication_id="d")
    with pytest.raises(ValueError, match="queue_partition_key"):
        SetEnqueueOptions(queue_partition_key="")
    assert DBOS.list_workflows() == []


def test_priority_needs_priority_enabled(dbos: type[DBOS]) -> None:
    """Setting a priority on a queue without priorities is an error, not a silent no-op."""
    with SetEnqueueOptions(priority=1), pytest.raises(DBOSException, match="priority_enabled"):
        dedup_queue.enqueue(q_quick, 1)


def test_duplicate_deduplication_id_raises(dbos: type[DBOS]) -> None:
    """A deduplication ID held by an ENQUEUED or PENDING workflow raises; once it finishes,
    the ID is free again; other queues are not affected."""
    with SetEnqueueOptions(deduplication_id="order-1"):
        first = dedup_queue.enqueue(q_held, "first")
    arrived(1)  # PENDING now
    with (
        SetEnqueueOptions(deduplication_id="order-1"),
        pytest.raises(DBOSQueueDeduplicatedError) as info,
    ):
        dedup_queue.enqueue(q_held, "second")
    assert (info.value.queue_name, info.value.deduplication_id) == ("test-dedup", "order-1")
    assert "order-1" in str(info.value)
    with SetEnqueueOptions(deduplication_id="order-1"):
        other = concurrency_queue.enqueue(q_held, "other-queue")
    release.set()
    assert first.get_result() == "first"
    assert other.get_result() == "other-queue"
    with SetEnqueueOptions(deduplication_id="order-1"):
        again = dedup_queue.enqueue(q_held, "again")
    assert again.get_result() == "again"


def test_cancel_an_enqueued_workflow_it_never_starts(dbos: type[DBOS]) -> None:
    """A workflow cancelled while ENQUEUED never runs; its handle raises cancelled."""
    from spindle import DBOSAwaitedWorkflowCancelledError

    blocker = priority_queue.enqueue(q_held, "blocker")
    assert arrived(1) == ["blocker"]
    waiting = priority_queue.enqueue(q_held, "never")
    assert waiting.get_status().status == "ENQUEUED"
    DBOS.cancel_workflow(waiting.workflow_id)
    release.set()
    assert blocker.get_result() == "blocker"
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        waiting.get_result()
    assert order == ["blocker"]


def test_resume_puts_a_queued_workflow_back_in_its_queue(dbos: type[DBOS]) -> None:
    """A cancelled queued workflow resumes ENQUEUED in its own queue (as DBOS), so the
    queue's limit governs it: it waits while the one slot is taken, then runs."""
    first = priority_queue.enqueue(q_held, "first")
    assert arrived(1) == ["first"]
    second = priority_queue.enqueue(q_held, "second")
    DBOS.cancel_workflow(second.workflow_id)
    assert second.get_status().status == "CANCELLED"
    resumed = DBOS.resume_workflow(second.workflow_id)
    assert resumed.workflow_id == second.workflow_id
    assert resumed.get_status().status == "ENQUEUED"  # not started past concurrency=1
    release.set()
    assert first.get_result() == "first"
    assert resumed.get_result() == "second"
    assert gauge.max == 1
    assert order == ["first", "second"]


def _enqueue_elsewhere(queue_name: str, count: int) -> list[str]:
    """ENQUEUED rows of a queue no worker of this process serves (another app's queue)."""
    ids = [f"{queue_name}-{i}" for i in range(count)]
    for wf_id in ids:
        enqueue_row(DBOS.runtime.sysdb, queue_name, wf_id)
    return ids


def test_unlimited_dequeue_is_one_statement_in_priority_then_fifo_order(
    dbos: type[DBOS],
) -> None:
    """A queue without limits dequeues in one UPDATE ... RETURNING: priority, then FIFO,
    at most max_rows, PENDING for this executor, a timeout's deadline from the start."""
    rt = DBOS.runtime
    queue = unlimited_priority_queue
    # Its worker has polled once (nothing there) and waits an hour: the rows are ours.
    wait_until_in(rt.queues.worker_threads()[queue.name].thread, "wait", caller="_work")
    specs = [("p3", 3, None), ("p1-a", 1, 5_000), ("p2", 2, None), ("p1-b", 1, None)]
    for wf_id, priority, timeout_ms in specs:
        enqueue_row(rt.sysdb, queue.name, wf_id, priority=priority, timeout_ms=timeout_ms)
    take = functools.partial(dequeue, rt.sysdb, queue, executor_id="me", application_version="0")
    first = take(max_rows=3, clock_ms=lambda: 1_000)
    assert [r.workflow_id for r in first.rows] == ["p1-a", "p1-b", "p2"]
    assert [r.deadline_epoch_ms for r in first.rows] == [6_000, None, None]
    assert first.retry_after is None
    rows = {w.workflow_id: w for w in DBOS.list_workflows(queue_name=queue.name)}
    assert {i: (rows[i].status, rows[i].executor_id) for i in rows} == {
        "p1-a": ("PENDING", "me"),
        "p1-b": ("PENDING", "me"),
        "p2": ("PENDING", "me"),
        "p3": ("ENQUEUED", "other"),
    }
    rest = take(max_rows=5, clock_ms=lambda: 1_000)
    assert [r.workflow_id for r in rest.rows] == ["p3"]
    assert take(max_rows=5, clock_ms=lambda: 1).rows == []


@pytest.mark.parametrize("limited", [False, True], ids=["one-statement", "counted"])
def test_a_process_dequeues_and_probes_only_its_own_application_version(
    dbos: type[DBOS], limited: bool
) -> None:
    """As DBOS: rows of another application version stay ENQUEUED for a process running
    that version; rows of this version and version-less ones are taken."""
    rt = DBOS.runtime
    queue = parked_limited_queue if limited else unlimited_priority_queue
    wait_until_in(rt.queues.worker_threads()[queue.name].thread, "wait", caller="_work")
    for wf_id, version in (("old", "v-old"), ("mine", "0"), ("none", "0"), ("new", "v-new")):
        enqueue_row(rt.sysdb, queue.name, wf_id, application_version=version)
    with rt.sysdb.engine.begin() as conn:  # as a DBOS client enqueues: no version
        version_less = ws.update().where(ws.c.workflow_uuid == "none")
        conn.execute(version_less.values(application_version=None))
    assert has_enqueued(rt.sysdb, queue.name, "0")
    take = functools.partial(
        dequeue, rt.sysdb, queue, executor_id="me", max_rows=10, clock_ms=lambda: 1
    )
    assert sorted(r.workflow_id for r in take(application_version="0").rows) == ["mine", "none"]
    assert not has_enqueued(rt.sysdb, queue.name, "0")
    assert take(application_version="0").rows == []
    assert [r.workflow_id for r in take(application_version="v-old").rows] == ["old"]
    left = DBOS.list_queued_workflows(queue_name=queue.name, status="ENQUEUED")
    assert [w.workflow_id for w in left] == ["new"]
    # The worker's one-read probe: (ENQUEUED work for this version, DELAYED work due).
    assert probe(rt.sysdb, queue.name, "v-new", 0) == (True, False)
    assert probe(rt.sysdb, queue.name, "0", 0) == (False, False)
    due = 10**15  # far beyond the worker's clock: only the probes below see it due
    with rt.sysdb.engine.begin() as conn:
        delayed = ws.update().where(ws.c.workflow_uuid == "new")
        conn.execute(delayed.values(status="DELAYED", delay_until_epoch_ms=due))
    assert probe(rt.sysdb, queue.name, "v-new", due - 1) == (False, False)
    assert probe(rt.sysdb, queue.name, "0", due) == (False, True)


@pytest.mark.parametrize("limited", [False, True], ids=["one-statement", "counted"])
def test_enqueues_in_one_millisecond_dequeue_in_enqueue_order(
    dbos: type[DBOS], limited: bool
) -> None:
    """FIFO holds among workflows enqueued in the same millisecond, whatever their IDs
    (the tie broke on the workflow ID, so z, y, x came out x, y, z)."""
    rt = DBOS.runtime
    queue = parked_limited_queue if limited else unlimited_priority_queue
    wait_until_in(rt.queues.worker_threads()[queue.name].thread, "wait", caller="_work")
    ids = ["z", "y", "x", "w"]
    for wf_id in ids:
        enqueue_row(rt.sysdb, queue.name, wf_id)
    with rt.sysdb.engine.begin() as conn:  # one millisecond for all four
        conn.execute(ws.update().where(ws.c.workflow_uuid.in_(ids)).values(created_at=1))
    take = functools.partial(
        dequeue, rt.sysdb, queue, executor_id="me", application_version="0", clock_ms=lambda: 1
    )
    assert [r.workflow_id for r in take(max_rows=2).rows] == ["z", "y"]
    assert [r.workflow_id for r in take(max_rows=5).rows] == ["x", "w"]


def test_list_queued_workflows_filters_by_queue_before_the_limit(dbos: type[DBOS]) -> None:
    """list_queued_workflows: only workflows still in a queue; queue_name, status and limit
    apply in the query, so a limit counts the named queue's workflows only."""
    done = dedup_queue.enqueue(q_quick, 1)
    assert done.get_result() == 2
    assert DBOS.start_workflow(q_quick, 5).get_result() == 6  # not queued
    first = _enqueue_elsewhere("elsewhere-a", 3)
    second = _enqueue_elsewhere("elsewhere-b", 2)

    queued = DBOS.list_queued_workflows()
    assert [w.workflow_id for w in queued] == first + second
    assert {w.status for w in queued} == {"ENQUEUED"}
    only = DBOS.list_queued_workflows(queue_name="elsewhere-b", limit=1)
    assert [w.workflow_id for w in only] == second[:1]
    newest = DBOS.list_queued_workflows(queue_name=["elsewhere-a"], limit=2, sort_desc=True)
    assert [w.workflow_id for w in newest] == [first[2], first[1]]
    finished = DBOS.list_queued_workflows(status="SUCCESS")
    assert [w.workflow_id for w in finished] == [done.workflow_id]
    by_queue = DBOS.list_workflows(queue_name=dedup_queue.name)
    assert [(w.workflow_id, w.status) for w in by_queue] == [(done.workflow_id, "SUCCESS")]
    with pytest.raises(ValueError, match="offset"):
        DBOS.list_queued_workflows(offset=-1)


@pytest.mark.slow
def test_a_failed_start_puts_the_rows_back_in_the_queue(
    dbos: type[DBOS], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If starting a dequeued workflow fails, it returns to ENQUEUED and runs later, instead
    of staying PENDING with nobody running it until the next launch."""
    import spindle.runtime._queue_manager as manager
    from spindle.runtime._core import start_dequeued as real

    failures = [RuntimeError("injected start failure")]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(manager, "start_dequeued", flaky)
    handles = [dedup_queue.enqueue(q_quick, i) for i in range(3)]
    assert [h.get_result() for h in handles] == [1, 2, 3]
    assert failures == []
    # DBOS counts the first run: each ran once.
    assert {w.recovery_attempts for w in DBOS.list_workflows(name="q_quick")} == {1}


def test_queued_timeout_runs_from_the_start(make_dbos: MakeDBOS) -> None:
    """SetWorkflowTimeout on enqueue: the deadline is set when the workflow is dequeued."""
    make_dbos().launch()
    with SetWorkflowTimeout(60.0):
        handle = dedup_queue.enqueue(q_quick, 1)
    assert handle.get_result() == 2
    status = handle.get_status()
    assert status.workflow_timeout_ms == 60_000
    assert status.workflow_deadline_epoch_ms is not None
    assert status.workflow_deadline_epoch_ms >= started_at("test-dedup")[0] + 60_000


# -- threads --------------------------------------------------------------------------------


def test_workers_are_children_of_the_manager(dbos: type[DBOS]) -> None:
    """The registry shows one manager and, as its children, one worker per declared queue;
    destroy() joins them all."""
    snap = DBOS.thread_registry.snapshot()
    managers = [t for t in snap.threads if t.name == MANAGER_NAME]
    assert len(managers) == 1
    manager = managers[0]
    assert manager.kind is ThreadKind.QUEUE
    assert manager.parent_id is None
    workers = {t.name: t for t in snap.threads if t.kind is ThreadKind.QUEUE and t is not manager}
    assert {worker_name(q.name) for q in GLOBAL_QUEUES.all()} <= set(workers)
    assert {t.parent_id for t in workers.values()} == {manager.record_id}
    ids = {t.record_id for t in workers.values()} | {manager.record_id}

    DBOS.destroy()
    after = {t.record_id: t for t in DBOS.thread_registry.snapshot().threads}
    assert {after[i].join_outcome for i in ids} == {JoinOutcome.JOINED}
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []


def test_shutdown_interrupts_a_worker_blocked_in_the_database(
    make_dbos: MakeDBOS, db_url: str
) -> None:
    """A worker blocked in a dequeue (PostgreSQL advisory lock) is interrupted by phase 8
    and joined in phase 9."""
    if not db_url.startswith("postgres"):
        pytest.skip("the advisory lock that blocks a dequeue is PostgreSQL's")
    from spindle.runtime._queue_db import _ADVISORY_CLASS, advisory_key

    make_dbos().launch()  # creates the database
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as holder:
            holder.execute(
                sa.select(
                    sa.func.pg_advisory_lock(_ADVISORY_CLASS, advisory_key(concurrency_queue.name))
                )
            )
            # The worker takes the lock only once its queue holds an ENQUEUED workflow.
            concurrency_queue.enqueue(q_quick, 1)
            _wait_until_blocked(holder)
            _destroy_and_check_the_worker_interrupted(concurrency_queue.name)
            holder.rollback()
    finally:
        engine.dispose()


def test_shutdown_interrupts_a_worker_waiting_for_sqlites_write_lock(
    make_dbos: MakeDBOS, db_url: str
) -> None:
    """Another process holds SQLite's write lock: a woken worker waits in its dequeue's
    BEGIN IMMEDIATE; phase 8 ends that wait and phase 9 joins the worker."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    make_dbos().launch()
    rt = DBOS.runtime
    worker = rt.queues.worker_threads()[lazy_queue.name]
    other = sqlite3.connect(sa.engine.make_url(db_url).database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the other process's write transaction
        rt.queues.wake(lazy_queue.name)  # as an enqueue does: the worker dequeues at once
        wait_until_in(worker.thread, "begin_immediate")
        _destroy_and_check_the_worker_interrupted(lazy_queue.name)
    finally:
        other.rollback()
        other.close()


def _destroy_and_check_the_worker_interrupted(queue_name: str) -> None:
    """destroy(): phase 8 interrupted a connection in flight, the order held, and the
    queue's worker was joined without an exception."""
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    interrupts = [e for e in timeline.events if e.type is EventType.DB_INTERRUPT]
    assert len(interrupts) == 1
    assert interrupts[0].attrs["interrupted"] >= 1
    assert timeline.violations == []
    snap = {t.name: t for t in DBOS.thread_registry.snapshot().threads}
    record = snap[worker_name(queue_name)]
    assert record.join_outcome is JoinOutcome.JOINED
    assert record.exception is None


def _wait_until_blocked(conn: sa.Connection) -> None:
    """Wait until a session waits on an advisory lock (read from pg_locks, bounded)."""
    waiter = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        blocked = conn.execute(
            sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        ).scalar()
        if blocked:
            return
        waiter.wait(0.01)
    raise AssertionError("the queue worker never blocked on the advisory lock")


# -- recovery and several processes -------------------------------------------------------------


def test_recovery_of_queued_and_running_workflows_after_kill_9(
    make_dbos: MakeDBOS, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed with 2 workflows running (concurrency=2) and 3 still queued: after relaunch
    every workflow finishes exactly once, within the queue's limit, and no completed step
    runs again."""
    effects = tmp_path / "effects.log"
    env = dict(
        os.environ, SPINDLE_EFFECTS=str(effects), SPINDLE_BLOCK="1", SPINDLE_QUEUE_APP_POLL="0.05"
    )
    count = 5
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.queue_app", "crash", db_url, str(count)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    before = collections.Counter(effects.read_text().split())
    running = sorted(line[: -len(":2")] for line in before if line.endswith(":2"))
    assert len(running) == queue_app.RECOVERY_CONCURRENCY

    monkeypatch.setenv("SPINDLE_EFFECTS", str(effects))
    monkeypatch.delenv("SPINDLE_BLOCK", raising=False)
    assert callable(queued_workflow)
    recovery_gauge.max = 0
    make_dbos().launch()
    ids = [f"qrec-{i}" for i in range(count)]
    assert [DBOS.retrieve_workflow(i).get_result() for i in ids] == [6] * count
    statuses = {w.workflow_id: w for w in DBOS.list_workflows(workflow_ids=ids)}
    assert {s.status for s in statuses.values()} == {"SUCCESS"}
    assert {i: statuses[i].recovery_attempts for i in ids} == {
        i: (2 if i in running else 1)
        for i in ids  # DBOS counts the first run
    }
    assert recovery_gauge.max <= queue_app.RECOVERY_CONCURRENCY

    counts = collections.Counter(effects.read_text().split())
    for wf in ids:
        assert counts[f"{wf}:1"] == 1, "a step that completed before the crash ran again"
        assert counts[f"{wf}:2"] == (2 if wf in running else 1)
        assert counts[f"{wf}:3"] == 1
        assert counts[f"{wf}:done"] == 1


def _run_two_processes(url: str, which: str, count: int, effects: Path) -> None:
    """Run two queue_app processes on ``which`` queue (B polls first, A enqueues ``count``)
    until every workflow finished; both must exit cleanly."""
    env = dict(os.environ, SPINDLE_EFFECTS=str(effects), SPINDLE_QUEUE_APP_POLL="0.02")
    children: list[subprocess.Popen[str]] = []
    try:
        for executor_id, mode in (("proc-b", "wait"), ("proc-a", "enqueue")):
            argv = ["-m", "tests.runtime.queue_app", which, url, executor_id, str(count), mode]
            child = subprocess.Popen(
                [sys.executable, *argv],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            children.append(child)
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "READY"
        for child in children:
            out, _ = child.communicate(timeout=300)
            assert child.returncode == 0
            assert out.strip().endswith("DONE")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(30)
            if child.stdout is not None:
                child.stdout.close()


def _runs_by_executor(url: str, queue_name: str) -> dict[str, int]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(ws.c.executor_id, ws.c.status, sa.func.count())
                .where(ws.c.queue_name == queue_name)
                .group_by(ws.c.executor_id, ws.c.status)
            ).all()
    finally:
        engine.dispose()
    assert {r[1] for r in rows} == {"SUCCESS"}
    return {r[0]: r[2] for r in rows}


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (for the tests that need several processes on it)."""
    from tests.conftest import new_postgres_url

    yield from new_postgres_url()


@pytest.mark.slow
@pytest.mark.postgres_only
def test_two_processes_drain_one_queue_exactly_once(pg_url: str, tmp_path: Path) -> None:
    """Two OS processes drain one queue of 500 workflows: each runs exactly once, and both
    processes take part."""
    count = 500
    effects = tmp_path / "effects.log"
    _run_two_processes(pg_url, "drain", count, effects)
    counts = collections.Counter(effects.read_text().split())
    assert set(counts) == {f"drain-{i}:{s}" for i in range(count) for s in (1, 2, 3)}
    assert set(counts.values()) == {1}, "a step ran twice"
    by_executor = _runs_by_executor(pg_url, "drain-q")
    assert sum(by_executor.values()) == count
    assert set(by_executor) == {"proc-a", "proc-b"}, by_executor


@pytest.mark.slow
@pytest.mark.postgres_only
def test_global_concurrency_holds_across_two_processes(pg_url: str, tmp_path: Path) -> None:
    """concurrency=3 is global: two processes together never run more than 3 at once
    (start/end logged on the system-wide monotonic clock), and 3 do at some point."""
    count = 40
    effects = tmp_path / "effects.log"
    _run_two_processes(pg_url, "shared", count, effects)
    events = []
    for line in effects.read_text().split():
        kind, ns, _wf = line.split(":", 2)
        # At equal times an end sorts first: the slot it frees may be taken at once.
        events.append((int(ns), 0 if kind == "E" else 1))
    running = peak = 0
    for _ns, is_start in sorted(events):
        running += 1 if is_start else -1
        peak = max(peak, running)
    assert len(events) == 2 * count
    assert peak == queue_app.GLOBAL_CONCURRENCY
    assert sum(_runs_by_executor(pg_url, "shared-q").values()) == count
