"""Garbage collection by age and by row count keeps exactly what it promises, ties included."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from spindle import DBOS, SetWorkflowID
from spindle.runtime import _admin_db
from spindle.runtime._schema import operation_outputs as oo
from spindle.runtime._schema import workflow_status as ws
from tests.conftest import MakeDBOS


@DBOS.step()
def gc_step(x: int) -> int:
    return x * 2


@DBOS.workflow()
def gc_workflow(x: int) -> int:
    return gc_step(x)


_release = threading.Event()


@DBOS.workflow()
def gc_waiting_workflow() -> str:
    _release.wait(30.0)
    return "done"


def _run(ids: list[str]) -> None:
    for i, wf_id in enumerate(ids):
        with SetWorkflowID(wf_id):
            assert gc_workflow(i) == 2 * i


def _set_created_at(created: dict[str, int]) -> None:
    with DBOS.runtime.sysdb.transaction() as conn:
        for wf_id, at in created.items():
            conn.execute(ws.update().where(ws.c.workflow_uuid == wf_id).values(created_at=at))


def _remaining() -> set[str]:
    with DBOS.runtime.sysdb.transaction() as conn:
        return {r[0] for r in conn.execute(sa.select(ws.c.workflow_uuid))}


def _steps_of(wf_ids: set[str]) -> set[str]:
    with DBOS.runtime.sysdb.transaction() as conn:
        return {
            r[0]
            for r in conn.execute(
                sa.select(oo.c.workflow_uuid).where(oo.c.workflow_uuid.in_(sorted(wf_ids)))
            )
        }


def test_row_threshold_keeps_exactly_the_newest_rows_when_created_at_ties(
    make_dbos: MakeDBOS,
) -> None:
    """created_at 1000/2000/2000, keep 1: the tie is broken by ID, so one row survives."""
    make_dbos().launch()
    _run(["gc-a", "gc-b", "gc-c"])
    _set_created_at({"gc-a": 1000, "gc-b": 2000, "gc-c": 2000})
    deleted = _admin_db.garbage_collect(DBOS.runtime.sysdb, cutoff_epoch_ms=None, rows_threshold=1)
    assert deleted == 2
    # Of the two rows of the newest millisecond, the larger ID ranks newer and is kept.
    assert _remaining() == {"gc-c"}
    assert _steps_of({"gc-a", "gc-b", "gc-c"}) == {"gc-c"}


def test_row_threshold_with_every_row_tied_keeps_that_many(make_dbos: MakeDBOS) -> None:
    """Five rows of one millisecond, keep 2: the two largest IDs stay, run after run."""
    make_dbos().launch()
    ids = [f"gc-tie-{i}" for i in range(5)]
    _run(ids)
    _set_created_at(dict.fromkeys(ids, 5000))
    assert (
        _admin_db.garbage_collect(DBOS.runtime.sysdb, cutoff_epoch_ms=None, rows_threshold=2) == 3
    )
    assert _remaining() == {"gc-tie-3", "gc-tie-4"}
    # Idempotent: the same threshold again deletes nothing.
    assert (
        _admin_db.garbage_collect(DBOS.runtime.sysdb, cutoff_epoch_ms=None, rows_threshold=2) == 0
    )
    assert (
        _admin_db.garbage_collect(DBOS.runtime.sysdb, cutoff_epoch_ms=None, rows_threshold=0) == 2
    )
    assert _remaining() == set()


def test_cutoff_and_threshold_delete_either_and_spare_running_workflows(
    make_dbos: MakeDBOS,
) -> None:
    """A row goes if it is older than the cutoff or beyond the newest N, and only if finished."""
    make_dbos().launch()
    _release.clear()
    _run(["gc-old", "gc-mid", "gc-new"])
    with SetWorkflowID("gc-running"):
        running = DBOS.start_workflow(gc_waiting_workflow)
    try:
        _set_created_at({"gc-running": 100, "gc-old": 200, "gc-mid": 300, "gc-new": 400})
        sysdb = DBOS.runtime.sysdb
        # Neither bound given: nothing at all is deleted.
        assert _admin_db.garbage_collect(sysdb, cutoff_epoch_ms=None, rows_threshold=None) == 0
        # The cutoff alone: gc-old is older; the older gc-running is PENDING and stays.
        assert _admin_db.garbage_collect(sysdb, cutoff_epoch_ms=250, rows_threshold=None) == 1
        assert _remaining() == {"gc-running", "gc-mid", "gc-new"}
        # A threshold larger than the table deletes nothing.
        assert _admin_db.garbage_collect(sysdb, cutoff_epoch_ms=None, rows_threshold=10) == 0
        # The threshold counts every row, running ones too: keep 1 (gc-new), gc-mid goes.
        assert _admin_db.garbage_collect(sysdb, cutoff_epoch_ms=150, rows_threshold=1) == 1
        assert _remaining() == {"gc-running", "gc-new"}
    finally:
        _release.set()
    assert running.get_result() == "done"
