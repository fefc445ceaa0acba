"""DBOS's identity columns of workflow_status (migration v10): class and config name, user,
assumed role and roles are written by the creating insert and listed without the input."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from spindle import DBOS, DBOSConfiguredInstance, DBOSContextSetAuth, Queue, SetWorkflowID
from spindle.runtime._migrations import LATEST_VERSION
from spindle.runtime._schema import IDENTITY_COLUMNS, schema_version, workflow_status
from spindle.runtime._sysdb import SystemDatabase
from tests.conftest import MakeDBOS

idcol_queue = Queue("idcol-queue", polling_interval_sec=0.1)


@DBOS.dbos_class("idcol-ledger")
class IdColLedger(DBOSConfiguredInstance):
    @DBOS.required_roles(["clerk"])
    @DBOS.workflow()
    def idcol_post(self, amount: int) -> int:
        return amount


@DBOS.workflow()
def idcol_plain(x: int) -> int:
    return x


idcol_ledger = IdColLedger("main-book")


def _columns(sysdb: SystemDatabase, wf_id: str) -> dict[str, Any]:
    ws = workflow_status
    with sysdb.engine.connect() as conn:
        row = conn.execute(
            sa.select(*(ws.c[n] for n in IDENTITY_COLUMNS)).where(ws.c.workflow_uuid == wf_id)
        ).one()
    return dict(row._mapping)


def _listed(wf_id: str) -> tuple[Any, ...]:
    (status,) = DBOS.list_workflows(workflow_ids=[wf_id], load_input=False, load_output=False)
    assert status.input is None  # the identity comes from the columns, not the input
    return (
        status.class_name,
        status.config_name,
        status.authenticated_user,
        status.assumed_role,
        status.authenticated_roles,
    )


def test_a_started_and_an_enqueued_workflow_list_their_identity_without_input(
    dbos: type[DBOS],
) -> None:
    with DBOSContextSetAuth("erin", ["viewer", "clerk"]):
        with SetWorkflowID("idcol-direct"):
            assert idcol_ledger.idcol_post(5) == 5
        queued = idcol_queue.enqueue(idcol_ledger.idcol_post, 7)
    assert queued.get_result() == 7
    expected = ("idcol-ledger", "main-book", "erin", "clerk", ["viewer", "clerk"])
    assert _listed("idcol-direct") == expected
    assert _listed(queued.workflow_id) == expected
    assert _columns(DBOS.runtime.sysdb, "idcol-direct")["authenticated_roles"] == (
        '["viewer", "clerk"]'
    )
    # DBOS's user filter now matches the stored user.
    by_user = DBOS.list_workflows(user="erin", load_input=False)
    assert {s.workflow_id for s in by_user} == {"idcol-direct", queued.workflow_id}
    assert DBOS.list_workflows(user="nobody") == []
    # A fork runs as the same identity, and its row says so.
    fork = DBOS.fork_workflow("idcol-direct", 1)
    assert fork.get_result() == 5
    assert _listed(fork.workflow_id) == expected


def test_a_workflow_without_identity_writes_none(dbos: type[DBOS]) -> None:
    with SetWorkflowID("idcol-plain"):
        assert idcol_plain(3) == 3
    handle = idcol_queue.enqueue(idcol_plain, 4)
    assert handle.get_result() == 4
    for wf_id in ("idcol-plain", handle.workflow_id):
        assert set(_columns(DBOS.runtime.sysdb, wf_id).values()) == {None}
        assert _listed(wf_id) == (None, None, None, None, None)


def test_v10_adds_the_identity_columns_to_a_v9_database_and_old_rows_keep_theirs(
    db_url: str, make_dbos: MakeDBOS
) -> None:
    """A row written before v10 has no identity columns: after the migration they are NULL
    and its status still reads the identity from its input."""
    dbos = make_dbos()
    dbos.launch()
    with DBOSContextSetAuth("fay", ["clerk"]), SetWorkflowID("idcol-old"):
        idcol_ledger.idcol_post(1)
    DBOS.destroy()
    db = SystemDatabase(db_url, pool_size=1)
    try:
        prefix = "" if db.sqlite else "dbos."
        with db.engine.begin() as conn:  # back to what version 9 made
            for column in IDENTITY_COLUMNS:
                conn.exec_driver_sql(f"ALTER TABLE {prefix}workflow_status DROP COLUMN {column}")
            conn.execute(schema_version.update().values(version=9))
        db.migrate()
        with db.engine.connect() as conn:
            assert conn.execute(sa.select(schema_version.c.version)).scalar() == LATEST_VERSION
        assert set(_columns(db, "idcol-old").values()) == {None}
    finally:
        db.close()
    make_dbos().launch()
    status = DBOS.get_workflow_status("idcol-old")
    assert status is not None
    assert (status.class_name, status.authenticated_user, status.assumed_role) == (
        "idcol-ledger",
        "fay",
        "clerk",
    )
    # Without the input an old row has no identity to show (its columns are NULL).
    assert _listed("idcol-old") == (None, None, None, None, None)
