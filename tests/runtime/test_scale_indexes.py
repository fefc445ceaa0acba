"""The queries that must stay fast on a large system database search an index, never walk
every finished workflow (both backends; the plans are checked on SQLite, whose planner is
misled by ANALYZE's statistics of a table of finished workflows)."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from spindle import DBOS
from spindle.runtime._schema import workflow_status as ws
from tests.conftest import MakeDBOS

ROWS = 3000


def _fill_finished(engine: sa.Engine) -> None:
    rows = [
        {
            "workflow_uuid": f"done-{i:05d}",
            "status": "SUCCESS",
            "name": "old",
            "executor_id": "old",
            "created_at": i,
            "updated_at": i,
        }
        for i in range(ROWS)
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
    assert {"idx_ws_status_executor", "idx_ws_created_at", "idx_ws_queue_status"} <= names


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
