"""Migration v8 on a database made before it: DELAYED rows that share a deduplication ID
with a live row (or with each other) are repaired, not lost, before the index is built."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from spindle.runtime._migrations import LATEST_VERSION
from spindle.runtime._schema import schema_version, workflow_status
from spindle.runtime._sysdb import SystemDatabase


@pytest.fixture
def v7_db(db_url: str) -> Iterator[SystemDatabase]:
    """A system database whose schema is back at version 7 (the dedup index ignores
    DELAYED rows, as it did then)."""
    db = SystemDatabase(db_url, pool_size=1)
    db.migrate()
    prefix = "" if db.sqlite else "dbos."
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prefix}uq_ws_queue_dedup_held")
        conn.exec_driver_sql(
            f"CREATE UNIQUE INDEX uq_ws_queue_dedup ON {prefix}workflow_status "
            "(queue_name, deduplication_id) WHERE deduplication_id IS NOT NULL "
            "AND status IN ('ENQUEUED', 'PENDING')"
        )
        conn.execute(schema_version.update().values(version=7))
    yield db
    db.close()


def _row(
    wf_id: str, status: str, dedup: str | None, created: int, queue: str = "q"
) -> dict[str, object]:
    return {
        "workflow_uuid": wf_id,
        "status": status,
        "name": "wf",
        "executor_id": "local",
        "created_at": created,
        "updated_at": created,
        "queue_name": queue,
        "deduplication_id": dedup,
    }


def _dedup_ids(db: SystemDatabase) -> dict[str, str | None]:
    ws = workflow_status
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(ws.c.workflow_uuid, ws.c.deduplication_id)).all()
    return {wf_id: dedup for wf_id, dedup in rows}


def test_v8_keeps_every_workflow_and_gives_a_shared_dedup_id_to_one_row(
    v7_db: SystemDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """The live row keeps a key it shares with a DELAYED row; of DELAYED rows alone the
    oldest keeps it; the others lose only the ID (logged), and the v8 index then holds."""
    rows = [
        _row("delayed-a", "DELAYED", "k1", 1),  # older than the live row: still loses k1
        _row("live-a", "ENQUEUED", "k1", 2),
        _row("delayed-b2", "DELAYED", "k2", 20),
        _row("delayed-b1", "DELAYED", "k2", 10),
        _row("other-queue", "DELAYED", "k1", 3, queue="r"),  # another queue: no conflict
        _row("done", "SUCCESS", "k2", 0),  # a finished row holds nothing
    ]
    with v7_db.engine.begin() as conn:
        conn.execute(workflow_status.insert(), rows)
    with caplog.at_level(logging.WARNING, logger="spindle"):
        v7_db.migrate()
    assert _dedup_ids(v7_db) == {
        "delayed-a": None,
        "live-a": "k1",
        "delayed-b1": "k2",
        "delayed-b2": None,
        "other-queue": "k1",
        "done": "k2",
    }
    logged = " ".join(r.getMessage() for r in caplog.records)
    for wf_id in ("delayed-a", "live-a", "delayed-b2", "delayed-b1"):
        assert wf_id in logged
    with v7_db.engine.connect() as conn:
        assert conn.execute(sa.select(schema_version.c.version)).scalar() == LATEST_VERSION
    # The v8 index now refuses a second DELAYED row holding k2 on q.
    with pytest.raises(sa.exc.IntegrityError), v7_db.engine.begin() as conn:
        conn.execute(workflow_status.insert(), [_row("delayed-b3", "DELAYED", "k2", 30)])


def test_v8_changes_nothing_on_a_v7_database_without_shared_ids(
    v7_db: SystemDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows with distinct keys migrate untouched and nothing is logged."""
    with v7_db.engine.begin() as conn:
        conn.execute(
            workflow_status.insert(),
            [_row("d", "DELAYED", "k1", 1), _row("e", "ENQUEUED", "k2", 2)],
        )
    with caplog.at_level(logging.WARNING, logger="spindle"):
        v7_db.migrate()
    assert _dedup_ids(v7_db) == {"d": "k1", "e": "k2"}
    assert not [r for r in caplog.records if "migration v8" in r.getMessage()]
