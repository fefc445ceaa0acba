"""Garbage collection in batches: each batch its own short transaction, finished workflows
only, their steps with them (both backends)."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from spindle import DBOS, SetWorkflowID
from spindle.runtime import _admin_db
from spindle.runtime._schema import operation_outputs as oo
from spindle.runtime._schema import workflow_status as ws
from tests.conftest import MakeDBOS


@DBOS.workflow()
def gc_workflow(x: int) -> int:
    return gc_step(x)


@DBOS.step()
def gc_step(x: int) -> int:
    return x


def test_gc_deletes_in_batches_and_keeps_running_workflows(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    for i in range(11):
        with SetWorkflowID(f"gc-{i:02d}"):
            gc_workflow(i)
    sysdb = DBOS.runtime.sysdb
    with sysdb.engine.begin() as conn:
        # Distinct creation times (fast runs share a millisecond, and the threshold is a
        # time cutoff), in the order they ran.
        for i in range(11):
            conn.execute(
                ws.update().where(ws.c.workflow_uuid == f"gc-{i:02d}").values(created_at=1000 * i)
            )
        # One old workflow still running: never deleted, nor its steps.
        conn.execute(ws.update().where(ws.c.workflow_uuid == "gc-00").values(status="PENDING"))
    caller = threading.get_ident()
    commits: list[int] = []

    def on_commit(_conn: Any) -> None:
        if threading.get_ident() == caller:
            commits.append(1)

    sa.event.listen(sysdb.engine, "commit", on_commit)
    try:
        deleted = _admin_db.garbage_collect(
            sysdb, cutoff_epoch_ms=None, rows_threshold=2, batch_size=3
        )
    finally:
        sa.event.remove(sysdb.engine, "commit", on_commit)
    # 11 rows, the newest 2 kept, gc-00 running: 8 deleted, in batches of 3 (3, 3, 2).
    assert deleted == 8
    assert len(commits) >= 3, "one transaction per batch, not one for everything"
    with sysdb.engine.connect() as conn:
        left = set(conn.execute(sa.select(ws.c.workflow_uuid)).scalars())
        steps = set(conn.execute(sa.select(oo.c.workflow_uuid)).scalars())
    assert left == {"gc-00", "gc-09", "gc-10"}
    assert steps == left, "the steps of deleted workflows go with them, the others stay"
    assert _admin_db.garbage_collect(sysdb, cutoff_epoch_ms=None, rows_threshold=2) == 0
