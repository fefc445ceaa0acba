"""The queries that must stay fast on a large system database search an index, never walk
every finished workflow (both backends; the plans are checked on SQLite, whose planner is
misled by ANALYZE's statistics of a table of finished workflows)."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from spindle import DBOS, Queue
from spindle.runtime._schema import workflow_status as ws
from tests.conftest import MakeDBOS

ROWS = 3000
_limited = Queue("test-scale-limited", limiter={"limit": 5, "period": 60.0})


def _fill_finished(engine: sa.Engine, count: int = ROWS) -> None:
    rows = [
        {
            "workflow_uuid": f"done-{i:05d}",
            "status": "SUCCESS",
            "name": "old",
            "executor_id": "old",
            "created_at": i,
            "updated_at": i,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(ws.insert(), rows)
        conn.exec_driver_sql("ANALYZE")


def _captured(engine: sa.Engine, call: Any) -> list[tuple[str, Any]]:
    """The SQL statements ``call`` runs on this thread, with their parameters."""
    caller = threading.get_ident()
    seen: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, *_a: Any) -> None:
        if threading.get_ident() == caller:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)
    return [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT")]


def test_indexes_of_the_hot_path_and_the_dequeue_exist(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    names = {
        i["name"]
        for i in sa.inspect(DBOS.runtime.sysdb.engine).get_indexes(
            "workflow_status", schema=None if DBOS.runtime.sysdb.sqlite else "dbos"
        )
    }
    assert {"idx_ws_status_executor", "idx_ws_created_at", "idx_ws_queue_order"} <= names
    assert "idx_ws_queue_status" not in names  # replaced by its extension


def test_active_listings_search_an_index_on_sqlite(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    rt = DBOS.runtime
    engine = rt.sysdb.engine
    _fill_finished(engine)
    calls = {
        "pending": lambda: DBOS.list_workflows(status="PENDING", limit=100, sort_desc=True),
        "queued": lambda: DBOS.list_queued_workflows(limit=100),
        "recovery ids": lambda: rt.sysdb.pending_workflow_ids(["local"], "v"),
        # By ID, then which of the rows were forked (idx_ws_forked_from).
        "status by id": lambda: DBOS.get_workflow_status("done-00007"),
        "forks of a listing": lambda: DBOS.list_workflows(limit=100),
    }
    for what, call in calls.items():
        statements = _captured(engine, call)
        assert statements, what
        if not rt.sysdb.sqlite:
            continue  # PostgreSQL's planner has histograms; the plans are SQLite's concern
        for statement, params in statements:
            with engine.connect() as conn:
                plan = " ".join(
                    str(row[-1])
                    for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                )
            if "ORDER BY main.workflow_status.created_at" in statement and "WHERE" not in statement:
                continue  # the unfiltered listing walks idx_ws_created_at for its first 100
            assert "SEARCH main.workflow_status USING" in plan, (what, plan, statement)
            assert "SCAN main.workflow_status" not in plan, (what, plan, statement)


def test_a_dequeue_reads_the_queued_rows_in_order_not_every_finished_one(
    make_dbos: MakeDBOS,
) -> None:
    """The trap: finished workflows older than the queued ones. Ordered by created_at, a
    plan may walk idx_ws_created_at past all of them (PostgreSQL chose that with a
    (queue_name, status) index: 8 ms per dequeue at 10,000 rows). The queue's index in the
    dequeue's order lets it read its first rows and stop, on both backends."""
    from spindle.runtime._queue_db import _DEQUEUES

    make_dbos().launch()
    rt = DBOS.runtime
    engine = rt.sysdb.engine
    # As seen in a benchmark's database: PostgreSQL took idx_ws_created_at at this size.
    _fill_finished(engine, 10_000)
    queued = [
        {
            "workflow_uuid": f"queued-{i:03d}",
            "status": "ENQUEUED",
            "name": "old",
            "queue_name": "orderly",
            "executor_id": "",
            "created_at": 10_000 + i // 5,
            "updated_at": 10_000,
        }
        for i in range(1000)
    ]
    with engine.begin() as conn:
        conn.execute(ws.insert(), queued)
        conn.exec_driver_sql("ANALYZE")
    version = rt.config.application_version
    for priority in (False, True):
        sql = _DEQUEUES[rt.sysdb.sqlite, priority]
        params = ("orderly", version, 10, "explain", 1, 1, 1)
        with engine.connect() as conn:
            if rt.sysdb.sqlite:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
                plan = " ".join(str(row[-1]) for row in rows)
            else:
                rows = conn.exec_driver_sql("EXPLAIN " + sql, params)
                plan = " ".join(str(row[0]) for row in rows)
            conn.rollback()
        assert "idx_ws_queue_order" in plan, (priority, plan)
        assert "idx_ws_created_at" not in plan, (priority, plan)
        assert "SCAN main.workflow_status" not in plan, (priority, plan)
        assert "Seq Scan" not in plan, (priority, plan)


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def test_a_dequeue_reads_no_more_than_it_takes_whatever_the_statistics_say(
    make_dbos: MakeDBOS,
) -> None:
    """PostgreSQL's statistics are stale whenever a backlog grew since the last ANALYZE,
    which saw the queue's finished workflows and no ENQUEUED one. Planned from them, the
    dequeue sorted the whole backlog and then hash-joined a scan of every ENQUEUED row
    back to the table (4-8 ms a dequeue at 600 rows under load). It must read its rows in
    the index's order and update them by key: no node reads more rows than the limit, in
    the generic plan (the worker's, once psycopg prepared it) and in a custom one."""
    make_dbos().launch()
    rt = DBOS.runtime
    if rt.sysdb.sqlite:
        return  # SQLite has no row locks and no generic plans; its plan is checked above
    from spindle.runtime._queue_db import _DEQUEUES

    engine = rt.sysdb.engine
    history = [
        {
            "workflow_uuid": f"history-{i:04d}",
            "status": "SUCCESS",
            "name": "old",
            "queue_name": "stale",
            "executor_id": "old",
            "created_at": i,
            "updated_at": i,
            "started_at_epoch_ms": i,
        }
        for i in range(ROWS)
    ]
    with engine.begin() as conn:
        conn.execute(ws.insert(), history)
        conn.exec_driver_sql("ANALYZE")  # the queue's statistics: no ENQUEUED row
    backlog = [
        {
            "workflow_uuid": f"backlog-{i:04d}",
            "status": "ENQUEUED",
            "name": "old",
            "queue_name": "stale",
            "executor_id": "",
            "created_at": 10_000 + i,
            "updated_at": 10_000,
            "enqueue_seq": i,
        }
        for i in range(1000)
    ]
    with engine.begin() as conn:
        conn.execute(ws.insert(), backlog)
    sql = _DEQUEUES[False, False]
    for i in range(sql.count("%s")):
        sql = sql.replace("%s", f"${i + 1}", 1)
    version = rt.config.application_version
    args = f"'stale', '{version}', 10, 'explain', 1, 1, 1"
    types = "text, text, bigint, text, bigint, bigint, bigint"
    for mode in ("force_generic_plan", "force_custom_plan"):
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SET LOCAL plan_cache_mode = {mode}")
            conn.exec_driver_sql(f"PREPARE dequeue_stale ({types}) AS {sql}")
            (plan,) = conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE dequeue_stale ({args})"
            ).one()
            conn.rollback()
        nodes = _plan_nodes(plan[0]["Plan"])
        kinds = [n["Node Type"] for n in nodes]
        for whole_backlog in ("Sort", "Hash Join", "Seq Scan", "Bitmap Heap Scan"):
            assert whole_backlog not in kinds, (mode, kinds)
        for node in nodes:
            assert node["Actual Rows"] <= 10, (mode, node["Node Type"], node["Actual Rows"])
        assert nodes[0]["Actual Rows"] == 10, (mode, kinds)


def test_the_rate_limiter_reads_an_index_of_started_workflows_only(make_dbos: MakeDBOS) -> None:
    """idx_ws_queue_started holds started workflows: an enqueue writes no entry into it,
    and the limiter's count (starts after a time) still searches it."""
    from spindle.runtime._queue_db import dequeue

    make_dbos().launch()
    rt = DBOS.runtime
    engine = rt.sysdb.engine
    _fill_finished(engine)
    with engine.connect() as conn:
        if rt.sysdb.sqlite:
            sql = "SELECT sql FROM sqlite_master WHERE name = 'idx_ws_queue_started'"
        else:
            sql = "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_ws_queue_started'"
        definition = conn.exec_driver_sql(sql).scalar()
    assert "started_at_epoch_ms IS NOT NULL" in str(definition), definition
    version = rt.config.application_version
    statements = _captured(
        engine,
        lambda: dequeue(
            rt.sysdb,
            _limited,
            executor_id="explain",
            application_version=version,
            max_rows=5,
            clock_ms=lambda: 0,
        ),
    )
    counts = [(s, p) for s, p in statements if "started_at_epoch_ms >" in s]
    assert len(counts) == 1, statements
    if rt.sysdb.sqlite:  # PostgreSQL may take idx_ws_queue_order as well: both are searches
        statement, params = counts[0]
        with engine.connect() as conn:
            plan = " ".join(
                str(row[-1])
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            )
        assert "USING INDEX idx_ws_queue_started" in plan, plan
