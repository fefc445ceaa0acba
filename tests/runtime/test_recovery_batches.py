"""Recovery in batches: a few statements per batch whatever its size, and at launch on a
supervised thread, so launch() does not wait for thousands of workflows (both backends)."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from spindle import DBOS, SetWorkflowID
from spindle.runtime import _recovery
from spindle.runtime._schema import workflow_status as ws
from tests.conftest import MakeDBOS

COUNT = 23


@DBOS.workflow()
def batched_workflow(x: int) -> int:
    return batched_step(x) + 1


@DBOS.step()
def batched_step(x: int) -> int:
    return x * 10


def _make_pending(count: int) -> list[str]:
    """``count`` workflows that ran to the end, set back to PENDING as if their process died
    before their last checkpoint: recovery replays the recorded step and finishes them."""
    ids = [f"batched-{i:03d}" for i in range(count)]
    for i, wf_id in enumerate(ids):
        with SetWorkflowID(wf_id):
            assert batched_workflow(i) == i * 10 + 1
    with DBOS.runtime.sysdb.engine.begin() as conn:
        conn.execute(
            ws.update()
            .where(ws.c.workflow_uuid.in_(ids))
            .values(status="PENDING", output=None, recovery_attempts=0)
        )
    return ids


def test_recovery_costs_statements_per_batch_not_per_workflow(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    ids = _make_pending(COUNT)
    rt = DBOS.runtime
    caller = threading.get_ident()
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Only this thread's: the recovered workflows run on executor threads meanwhile.
        if threading.get_ident() == caller:
            statements.append(statement.split(None, 1)[0].upper())

    sa.event.listen(rt.sysdb.engine, "before_cursor_execute", count)
    try:
        handles = _recovery.recover_pending(rt, [rt.config.executor_id], batch_size=5)
    finally:
        sa.event.remove(rt.sysdb.engine, "before_cursor_execute", count)
    assert sorted(h.workflow_id for h in handles) == ids
    assert sorted(h.get_result() for h in handles) == sorted(i * 10 + 1 for i in range(COUNT))
    batches = -(-COUNT // 5)
    # The ID list, then per batch: the rows, the claim, the recorded steps.
    assert statements.count("SELECT") == 1 + 2 * batches
    assert statements.count("UPDATE") == batches
    with rt.sysdb.engine.connect() as conn:
        attempts = conn.execute(
            sa.select(ws.c.recovery_attempts).where(ws.c.workflow_uuid.in_(ids))
        ).scalars()
        assert set(attempts) == {1}, "each claim counts one recovery attempt"
    # A second pass finds nothing PENDING: nothing runs twice.
    assert _recovery.recover_pending(rt, [rt.config.executor_id], batch_size=5) == []


def test_launch_recovers_in_the_background_on_a_supervised_thread(make_dbos: MakeDBOS) -> None:
    dbos = make_dbos()
    dbos.launch()
    ids = _make_pending(COUNT)
    DBOS.destroy()
    DBOS.launch()
    rt = DBOS.runtime
    done = rt.recovery_done
    assert done is not None, "launch found PENDING workflows to recover"
    assert done.wait(30)
    names = [r.name for r in rt.registry.records()]
    assert _recovery.THREAD_NAME in names, "the recovery thread is in the thread registry"
    for i, wf_id in enumerate(ids):
        assert DBOS.retrieve_workflow(wf_id).get_result() == i * 10 + 1
    with rt.sysdb.engine.connect() as conn:
        statuses = conn.execute(sa.select(ws.c.status).where(ws.c.workflow_uuid.in_(ids)))
        assert set(statuses.scalars()) == {"SUCCESS"}


def test_launch_with_nothing_pending_starts_no_recovery_thread(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    rt = DBOS.runtime
    assert rt.recovery_done is None
    assert _recovery.THREAD_NAME not in [r.name for r in rt.registry.records()]
