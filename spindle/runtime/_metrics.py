"""``GET /metrics``: the runtime's families in Prometheus text exposition, read at scrape time.

Nothing here runs on the workflow hot path: the thread families come from the registry (see
``spindle.diagnostics._metrics``), the workflow and queue families from two small reads of
the system database (counts the database itself keeps, see ``_status_counts``), the
executor families from the workers' registry records, all when a scraper asks.
``prometheus_client`` only renders: its text format and escaping are the reference
implementation's, and families without samples still get their HELP and TYPE.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from spindle.diagnostics._metrics import (
    COUNTER,
    GAUGE,
    Family,
    Sample,
    thread_metrics,
)

from . import _status_counts
from ._queue import GLOBAL_QUEUES
from ._rows import CANCELLED, ENQUEUED, ERROR, MAX_RECOVERY_ATTEMPTS_EXCEEDED, PENDING, SUCCESS
from ._schema import workflow_status as ws
from ._sysdb import rare

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

#: Text format 0.0.4: every Prometheus server reads it (the names here need no UTF-8 escaping,
#: so the body is the same in both formats prometheus_client can write).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STATUSES = (PENDING, ENQUEUED, SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED)


def executor_families(rt: Runtime) -> list[Family]:
    """``spindle_executor_size`` (its bound) and ``spindle_executor_busy`` (workers in a task)."""
    size = rt.config.max_executor_threads
    busy = 0
    executor = getattr(rt, "executor", None)
    if executor is not None:
        # The registry's own idle state (what /dbos/threads shows): a worker is busy while
        # its record names a workflow (set on entering one, cleared on leaving it). One
        # attribute read per worker, no stack walk.
        for thread, record in executor.worker_records():
            if thread.is_alive() and record.work is not None:
                busy += 1
    return [
        Family(
            "spindle_executor_size",
            GAUGE,
            "Bound of the workflow executor (max_executor_threads).",
            samples=(Sample((), float(size)),),
        ),
        Family(
            "spindle_executor_busy",
            GAUGE,
            "Executor workers running a workflow now (idle workers wait for work).",
            samples=(Sample((), float(busy)),),
        ),
    ]


def database_families(rt: Runtime) -> list[Family]:
    """Workflows by status and queue depths: two small reads of the system database.

    The counts by status come from ``workflow_status_counts``, which triggers keep exact
    (see :mod:`._status_counts`; the first call installs them), not from a scan of every
    row; the depths from the few
    ENQUEUED rows, found through the status index. A failing database is a scrape without
    those samples and ``spindle_system_database_up 0``, never a failed scrape: the thread
    families matter most when the database is in trouble.
    """
    by_status = dict.fromkeys(STATUSES, 0)
    depth = {q.name: 0 for q in GLOBAL_QUEUES.all()}
    up = 1.0
    if rt.sysdb.closed:
        # After phase 10 (the final OTLP export): no rows to read, and nothing to warn about.
        return _database_families({}, {}, 0.0)
    sqlite = rt.sysdb.sqlite
    enqueued = ws.c.status == ENQUEUED
    depth_stmt = (
        sa.select(ws.c.queue_name, sa.func.count())
        .where(rare(enqueued) if sqlite else enqueued, ws.c.queue_name.isnot(None))
        .group_by(ws.c.queue_name)
    )
    try:
        partial_rows = 0
        with rt.sysdb.transaction(read=True) as conn:
            ready = _status_counts.installed(conn)
        if not ready:
            # The first scrape of this system database: from now on its writers keep the
            # counts (see _status_counts for why not before).
            with rt.sysdb.transaction() as conn:
                _status_counts.install(conn)
        with rt.sysdb.transaction(read=True) as conn:
            for status, count, parts in conn.exec_driver_sql(_status_counts.read_sql(sqlite)):
                by_status[status] = by_status.get(status, 0) + int(count)
                partial_rows += int(parts)
            for queue_name, count in conn.execute(depth_stmt):
                depth[queue_name] = depth.get(queue_name, 0) + int(count)
        if not sqlite and partial_rows > _status_counts.FOLD_ABOVE:
            # Off the hot path, and rare: backends that exited left rows behind.
            with rt.sysdb.transaction() as conn:
                for statement in _status_counts.fold_sql():
                    conn.exec_driver_sql(statement)
    except Exception as exc:
        up = 0.0
        by_status, depth = {}, {}
        logger.warning("spindle: /metrics could not read the system database: %s", exc)
    return _database_families(by_status, depth, up)


def _database_families(by_status: dict[str, int], depth: dict[str, int], up: float) -> list[Family]:
    return [
        Family(
            "spindle_workflows_total",
            GAUGE,
            "Workflows in the system database by status, exact: counts that triggers "
            "(installed by the first scrape) keep in the transactions that change a status, "
            "from every writer (a gauge: rows change status).",
            ("status",),
            tuple(Sample((s,), float(n)) for s, n in by_status.items()),
        ),
        Family(
            "spindle_queue_depth",
            GAUGE,
            "Workflows waiting in each queue (ENQUEUED, not yet started).",
            ("queue",),
            tuple(Sample((q,), float(n)) for q, n in sorted(depth.items())),
        ),
        Family(
            "spindle_system_database_up",
            GAUGE,
            "1 when the last scrape could read the system database, else 0.",
            samples=(Sample((), up),),
        ),
    ]


def runtime_families(rt: Runtime) -> list[Family]:
    """Every family ``/metrics`` exposes, read now (blocking: call it off the event loop)."""
    return [
        *thread_metrics(rt.registry).families(),
        *executor_families(rt),
        *database_families(rt),
    ]


def _to_prometheus(family: Family) -> Metric:
    labels = list(family.label_names)
    if family.type == GAUGE:
        gauge = GaugeMetricFamily(family.name, family.help, labels=labels)
        for s in family.samples:
            gauge.add_metric(list(s.labels), s.value)
        return gauge
    if family.type == COUNTER:
        counter = CounterMetricFamily(family.name, family.help, labels=labels)
        for s in family.samples:
            counter.add_metric(list(s.labels), s.value)
        return counter
    histogram = HistogramMetricFamily(family.name, family.help, labels=labels)
    for h in family.histograms:
        buckets: list[tuple[str, float]] = [(repr(le), float(n)) for le, n in h.buckets]
        buckets.append(("+Inf", float(h.count)))
        histogram.add_metric(list(h.labels), buckets, h.sum)
    return histogram


class _Families(Collector):
    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield _to_prometheus(family)

    def describe(self) -> list[Metric]:
        # Nothing to check at registration: the registry below lives for one scrape.
        return []


def exposition(families: list[Family]) -> bytes:
    """Families as Prometheus text exposition format 0.0.4."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def metrics_route(rt: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """The ``GET /metrics`` endpoint of the admin app."""
    # Installed now (launch), not at the first scrape: a shutdown before any scrape (then a
    # new launch) must still be counted, its joins, phases and violations.
    thread_metrics(rt.registry)

    # Behind the admin app's one authentication layer (AdminAuth), like every route there.
    async def metrics(_request: Request) -> Response:
        body = await run_in_threadpool(lambda: exposition(runtime_families(rt)))
        return Response(body, media_type=CONTENT_TYPE)

    return metrics
