"""The system database's hot path (one autocommit statement per checkpoint), on both backends."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from spindle.runtime._introspect_db import Filters, list_status
from spindle.runtime._migrations import LATEST_VERSION
from spindle.runtime._rows import ERROR, PENDING, SUCCESS
from spindle.runtime._schema import schema_version, workflow_status
from spindle.runtime._sysdb import SystemDatabase
from spindle.runtime._sysdb_gate import SystemDatabaseClosed
from tests._waits import wait_until, wait_until_in


@pytest.fixture
def sysdb(db_url: str) -> Iterator[SystemDatabase]:
    db = SystemDatabase(db_url, pool_size=2)
    db.migrate()
    yield db
    db.close()


def _insert(db: SystemDatabase, wf_id: str, **kw: Any) -> Any:
    return db.insert_workflow(
        workflow_id=wf_id,
        name=kw.pop("name", "wf"),
        inputs=b"in",
        executor_id="local",
        application_version="0",
        **kw,
    )


def test_insert_workflow_once_then_returns_the_existing_row(sysdb: SystemDatabase) -> None:
    assert _insert(sysdb, "a", timeout_ms=5000, deadline_epoch_ms=123) is None
    existing = _insert(sysdb, "a", name="other")
    assert existing is not None
    assert (existing.workflow_id, existing.name, existing.status) == ("a", "wf", PENDING)
    assert (existing.inputs, existing.workflow_deadline_epoch_ms) == (b"in", 123)
    assert existing.created_at == existing.updated_at > 0


def test_record_step_recorded_conflict_and_not_pending(sysdb: SystemDatabase) -> None:
    _insert(sysdb, "a")
    assert sysdb.record_step("a", 1, "s", output=b"out", error=None) == "recorded"
    assert sysdb.record_step("a", 1, "s", output=b"again", error=None) == "conflict"
    assert sysdb.record_step("a", 2, "s", output=None, error=b"boom") == "recorded"
    steps = sysdb.step_outputs("a")
    assert (steps[1].output, steps[1].error, steps[1].function_name) == (b"out", None, "s")
    assert (steps[2].output, steps[2].error) == (None, b"boom")
    assert sysdb.record_step("nope", 1, "s", output=b"x", error=None) == "not-pending"

    assert sysdb.finish_workflow("a", SUCCESS, output=b"result", error=None)
    assert not sysdb.finish_workflow("a", ERROR, output=None, error=b"late")
    assert sysdb.record_step("a", 3, "s", output=b"x", error=None) == "not-pending"
    row = sysdb.get_status("a")
    assert row is not None
    assert (row.status, row.output, row.error) == (SUCCESS, b"result", None)
    assert 3 not in sysdb.step_outputs("a")


def test_a_cancelled_workflow_records_no_step(sysdb: SystemDatabase) -> None:
    _insert(sysdb, "a")
    assert sysdb.cancel("a")
    assert sysdb.record_step("a", 1, "s", output=b"x", error=None) == "not-pending"
    assert not sysdb.finish_workflow("a", SUCCESS, output=b"x", error=None)


def test_concurrent_writers_all_land(sysdb: SystemDatabase) -> None:
    """Eight threads on a pool of 2 (+2 overflow): every checkpoint is written once."""
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(15):
                wf = f"w{t}-{i}"
                assert _insert(sysdb, wf) is None
                for fid in range(3):
                    assert sysdb.record_step(wf, fid, "s", output=b"o", error=None) == "recorded"
                assert sysdb.finish_workflow(wf, SUCCESS, output=b"r", error=None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    rows, _ = list_status(sysdb, Filters(status=[SUCCESS]))
    assert len(rows) == 8 * 15
    assert all(len(sysdb.step_outputs(r.workflow_id)) == 3 for r in rows[:10])
    assert len(sysdb.hot.idle) <= 2  # the hot path keeps at most pool_size connections


def test_connections_given_back_to_the_pool_are_transactional_again(db_url: str) -> None:
    """A hot connection beyond the idle cap returns to the pool out of autocommit mode."""
    db = SystemDatabase(db_url, pool_size=1)
    db.migrate()
    try:
        barrier = threading.Barrier(4)

        def worker(t: int) -> None:
            barrier.wait(10)
            _insert(db, f"w{t}")

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        for _ in range(3):  # every pooled connection, whichever the pool hands out
            with db.engine.connect() as conn:
                conn.execute(
                    workflow_status.update()
                    .where(workflow_status.c.workflow_uuid == "w0")
                    .values(name="changed")
                )
                conn.rollback()
        row = db.get_status("w0")
        assert row is not None
        assert row.name == "wf"
    finally:
        db.close()


def test_writes_after_close_are_refused(db_url: str) -> None:
    db = SystemDatabase(db_url, pool_size=2)
    db.migrate()
    _insert(db, "a")
    assert len(db.hot.idle) == 1
    assert db.close() == 0
    assert db.hot.idle == []
    with pytest.raises(SystemDatabaseClosed):
        _insert(db, "b")
    with pytest.raises(SystemDatabaseClosed):
        db.record_step("a", 1, "s", output=b"x", error=None)
    with pytest.raises(SystemDatabaseClosed):
        db.finish_workflow("a", SUCCESS, output=b"x", error=None)


def _lock_waiters(db: SystemDatabase) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE NOT granted").scalar_one()
        )


def _connections_in_flight(db: SystemDatabase) -> int:
    return db.gate.connections_in_flight()


def _run(target: Any) -> tuple[threading.Thread, list[BaseException | None]]:
    outcome: list[BaseException | None] = []

    def body() -> None:
        try:
            target()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    th = threading.Thread(target=body)
    th.start()
    return th, outcome


@pytest.mark.parametrize("via", ["hot-path", "transaction"])
def test_interrupt_ends_a_sqlite_writer_waiting_for_another_process(db_url: str, via: str) -> None:
    """Another process holds SQLite's write lock: our writer waits in BEGIN IMMEDIATE, where
    sqlite3_interrupt() does not reach; interrupt() still ends the wait, well within
    busy_timeout, and the writer sees SystemDatabaseClosed."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    db = SystemDatabase(db_url, pool_size=2)
    db.migrate()
    _insert(db, "a")
    other = sqlite3.connect(sa.engine.make_url(db_url).database or "", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the other process's write transaction

    def write() -> None:
        if via == "hot-path":
            db.finish_workflow("a", SUCCESS, output=b"x", error=None)
        else:
            db.cancel("a")

    th, outcome = _run(write)
    try:
        wait_until_in(th, "begin_immediate")
        started = time.monotonic()
        assert db.interrupt() >= 1
        th.join(10)
        assert not th.is_alive()
        assert time.monotonic() - started < 5  # not busy_timeout (30 s)
        assert len(outcome) == 1
        assert isinstance(outcome[0], SystemDatabaseClosed)
    finally:
        other.rollback()
        other.close()
        th.join(10)
        assert db.close() == 0
    check = sqlite3.connect(sa.engine.make_url(db_url).database or "")
    assert check.execute("SELECT status FROM workflow_status").fetchall() == [(PENDING,)]
    check.close()


def test_interrupt_cancels_a_hot_write_blocked_in_postgres(db_url: str) -> None:
    """The statement waits on a table lock in the server; interrupt() cancels it."""
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's server-side lock wait (SQLite's: the test above)")
    db = SystemDatabase(db_url, pool_size=2)
    db.migrate()
    _insert(db, "a")
    blocker: Any = db.engine.raw_connection()
    blocker.driver_connection.execute("LOCK TABLE dbos.workflow_status IN ACCESS EXCLUSIVE MODE")
    th, outcome = _run(lambda: db.finish_workflow("a", SUCCESS, output=b"x", error=None))
    try:
        wait_until(lambda: _connections_in_flight(db) == 1, "one connection in flight")
        wait_until(
            lambda: _lock_waiters(db) >= 1, "a lock waiter"
        )  # it reached the server and blocks there
        assert db.interrupt() == 1
        th.join(10)
        assert not th.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], SystemDatabaseClosed)
    finally:
        blocker.rollback()
        blocker.close()
        th.join(10)
        assert db.close() == 0


def test_a_queued_write_admitted_before_interrupt_still_lands(db_url: str) -> None:
    """SQLite writers of the process queue on a lock. One admitted before interrupt() runs
    when its turn comes (close() waits for it, as for an _op already in); later writes are
    refused at the gate at once, without queueing."""
    if not db_url.startswith("sqlite"):
        pytest.skip("only SQLite queues this process's writers")
    db = SystemDatabase(db_url, pool_size=2)
    db.migrate()
    _insert(db, "a")
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction() as conn:
            conn.execute(sa.text("UPDATE workflow_status SET updated_at = 1"))
            entered.set()
            release.wait(10)

    holder, held = _run(hold)
    assert entered.wait(10)
    finished: list[bool] = []
    th, outcome = _run(
        lambda: finished.append(db.finish_workflow("a", SUCCESS, output=b"x", error=None))
    )
    try:
        # Admitted at the gate (counted in flight) before interrupt(), then queued on the lock.
        wait_until(lambda: db.gate.operations_in_flight() == 2, "two operations in flight")
        assert th.is_alive()
        db.interrupt()
        with pytest.raises(SystemDatabaseClosed):
            db.record_step("a", 1, "s", output=b"x", error=None)
        release.set()
        th.join(10)
        holder.join(10)
        assert (outcome, finished, held) == ([None], [True], [None])
    finally:
        release.set()
        holder.join(10)
        th.join(10)
        assert db.close() == 0
    check = sqlite3.connect(sa.engine.make_url(db_url).database or "")
    assert check.execute("SELECT status FROM workflow_status").fetchall() == [(SUCCESS,)]
    assert check.execute("SELECT count(*) FROM operation_outputs").fetchall() == [(0,)]
    check.close()


def test_v5_adds_the_partition_key_to_a_database_made_before_it(db_url: str) -> None:
    """A version-4 database (no queue_partition_key) is brought to the latest schema; its
    rows are kept and the new column and index work."""
    db = SystemDatabase(db_url, pool_size=1)
    try:
        db.migrate()
        _insert(db, "old")
        prefix = "" if db.sqlite else "dbos."
        with db.engine.begin() as conn:  # back to what version 4 made
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prefix}idx_ws_queue_partition")
            table = f"{prefix}workflow_status"
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN queue_partition_key")
            conn.execute(schema_version.update().values(version=4))
        db.migrate()
        with db.engine.connect() as conn:
            assert conn.execute(sa.select(schema_version.c.version)).scalar() == LATEST_VERSION
        row = db.get_status("old")
        assert row is not None
        assert (row.workflow_id, row.queue_partition_key) == ("old", None)
        db.migrate()  # idempotent
    finally:
        db.close()


def test_cancel_tree_returns_only_the_workflows_it_cancelled(sysdb: SystemDatabase) -> None:
    # A deadline handler cancels in memory each id it gets back: a child whose SUCCESS is
    # already committed must not be among them, or its waiters would be told "cancelled".
    _insert(sysdb, "parent")
    _insert(sysdb, "done-child", parent_workflow_id="parent")
    _insert(sysdb, "running-child", parent_workflow_id="parent")
    assert sysdb.finish_workflow("done-child", SUCCESS, output=b"42", error=None)
    assert sorted(sysdb.cancel_tree("parent")) == ["parent", "running-child"]
    row = sysdb.get_status("done-child")
    assert row is not None
    assert row.status == SUCCESS
    assert sysdb.cancel_tree("parent") == []


def test_v9_adds_step_start_times_to_a_database_made_before_it(db_url: str) -> None:
    """A version-8 database (steps without started_at_epoch_ms) is migrated; its steps are
    kept and read with their commit time as their start."""
    db = SystemDatabase(db_url, pool_size=1)
    try:
        db.migrate()
        _insert(db, "old-steps")
        assert db.record_step("old-steps", 1, "s", output=None, error=None) == "recorded"
        prefix = "" if db.sqlite else "dbos."
        with db.engine.begin() as conn:  # back to what version 8 made
            conn.exec_driver_sql(
                f"ALTER TABLE {prefix}operation_outputs DROP COLUMN started_at_epoch_ms"
            )
            conn.execute(schema_version.update().values(version=8))
        db.migrate()
        old = db.step_outputs("old-steps")[1]
        assert old.started_at_epoch_ms is None
        assert old.started_at == old.completed_at
        assert (
            db.record_step("old-steps", 2, "t", output=None, error=None, started_at=5) == "recorded"
        )
        assert db.step_outputs("old-steps")[2].started_at == 5
    finally:
        db.close()
