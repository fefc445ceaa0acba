"""Workflow counts by status that the system database keeps (``workflow_status_counts``)
once a scrape asked for them: exact after every kind of write, on both backends."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from spindle import DBOS, Queue
from spindle.runtime import _status_counts
from spindle.runtime._metrics import database_families
from spindle.runtime._rows import CANCELLED, ENQUEUED, ERROR, PENDING, SUCCESS
from spindle.runtime._sysdb import SystemDatabase

counted_queue = Queue("status-counts-queue")


@pytest.fixture
def sysdb(db_url: str) -> Iterator[SystemDatabase]:
    """A migrated system database that keeps the counts (as after a first scrape)."""
    db = SystemDatabase(db_url, pool_size=2)
    db.migrate()
    with db.engine.begin() as conn:
        _status_counts.install(conn)
    yield db
    db.close()


def _prefix(db: SystemDatabase) -> str:
    return "" if db.sqlite else "dbos."


def _kept(db: SystemDatabase) -> dict[str, int]:
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(_status_counts.read_sql(db.sqlite))
        return {status: int(n) for status, n, _parts in rows if int(n) != 0}


def _counted(db: SystemDatabase) -> dict[str, int]:
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT status, count(*) FROM {_prefix(db)}workflow_status GROUP BY status"
        )
        return {status: int(n) for status, n in rows}


def _bulk_insert(conn: sa.Connection, prefix: str, first: int, n: int, status: str) -> None:
    """``n`` rows in one ``INSERT ... SELECT`` (a writer that is not Spindle's hot path)."""
    if conn.dialect.name == "sqlite":
        gen = "WITH RECURSIVE g(x) AS (SELECT :a UNION ALL SELECT x + 1 FROM g WHERE x < :b) "
        source, table = "g", "workflow_status"
    else:
        gen, table = "", "dbos.workflow_status"
        source = "generate_series(CAST(:a AS bigint), :b) AS g(x)"
    conn.execute(
        sa.text(
            f"{gen}INSERT INTO {table} (workflow_uuid, status, name, executor_id, created_at,"
            f" updated_at) SELECT :p || CAST(x AS TEXT), :st, 'bulk', 'other', x, x FROM {source}"
        ),
        {"a": first, "b": first + n - 1, "p": prefix, "st": status},
    )


def test_counts_follow_bulk_inserts_updates_and_deletes_by_any_writer(
    sysdb: SystemDatabase,
) -> None:
    """Statements of many rows, from a connection outside the runtime, move the counts by
    exactly the rows they touched; an UPDATE that leaves the status alone moves nothing."""
    table = f"{_prefix(sysdb)}workflow_status"
    with sysdb.engine.begin() as conn:
        _bulk_insert(conn, "s-", 1, 500, SUCCESS)
        _bulk_insert(conn, "p-", 1, 300, PENDING)
    assert _kept(sysdb) == {SUCCESS: 500, PENDING: 300} == _counted(sysdb)
    with sysdb.engine.begin() as conn:
        # p-1, p-10..p-19, p-100..p-199: 111 rows
        conn.execute(
            sa.text(f"UPDATE {table} SET status = 'ERROR' WHERE workflow_uuid LIKE :p"),
            {"p": "p-1%"},
        )
        conn.exec_driver_sql(f"UPDATE {table} SET recovery_attempts = recovery_attempts + 1")
        conn.execute(sa.text(f"DELETE FROM {table} WHERE workflow_uuid LIKE :p"), {"p": "s-2%"})
    assert _kept(sysdb) == {SUCCESS: 389, PENDING: 189, ERROR: 111} == _counted(sysdb)
    with sysdb.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {table}")
    assert _kept(sysdb) == {} == _counted(sysdb)


def test_a_rolled_back_write_leaves_the_counts_alone(sysdb: SystemDatabase) -> None:
    """The counts change in the writer's transaction, so they roll back with it."""
    conn = sysdb.engine.connect()
    try:
        tx = conn.begin()
        _bulk_insert(conn, "r-", 1, 10, ENQUEUED)
        tx.rollback()
    finally:
        conn.close()
    assert _kept(sysdb) == {} == _counted(sysdb)


def test_the_install_counts_the_rows_already_there(db_url: str) -> None:
    """A database that never kept counts gets counts equal to its rows at the install,
    and keeps them from then on; installing again changes nothing."""
    db = SystemDatabase(db_url, pool_size=2)
    try:
        db.migrate()
        with db.engine.begin() as conn:
            assert not _status_counts.installed(conn)
            _bulk_insert(conn, "old-", 1, 40, SUCCESS)
            _bulk_insert(conn, "old-", 41, 2, CANCELLED)
        with db.engine.begin() as conn:
            _status_counts.install(conn)
            assert _status_counts.installed(conn)
        assert _kept(db) == {SUCCESS: 40, CANCELLED: 2} == _counted(db)
        with db.engine.begin() as conn:
            _bulk_insert(conn, "new-", 1, 3, SUCCESS)
            _status_counts.install(conn)
        assert _kept(db) == {SUCCESS: 43, CANCELLED: 2} == _counted(db)
    finally:
        db.close()


def test_concurrent_writers_each_keep_their_own_partial_counts(sysdb: SystemDatabase) -> None:
    """Four writers at once (own connections): the sums are exact; on PostgreSQL each
    backend wrote its own rows, and a fold moves exited backends' rows into slot 0
    without changing any sum."""
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(k: int) -> None:
        try:
            start.wait(10)
            for i in range(10):
                with sysdb.engine.begin() as conn:
                    _bulk_insert(conn, f"w{k}-{i}-", 1, 5, ENQUEUED)
                with sysdb.engine.begin() as conn:
                    conn.execute(
                        sa.text(
                            f"UPDATE {_prefix(sysdb)}workflow_status SET status = 'PENDING' "
                            "WHERE workflow_uuid LIKE :p"
                        ),
                        {"p": f"w{k}-{i}-%"},
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert _kept(sysdb) == {PENDING: 200} == _counted(sysdb)
    if sysdb.sqlite:
        return
    sysdb.engine.dispose()  # every backend that wrote exits
    table = "dbos.workflow_status_counts"
    with sysdb.engine.connect() as conn:
        # pg_stat_activity can list a backend for a moment after its client left.
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with sysdb.engine.begin() as conn:
        before = conn.exec_driver_sql(f"SELECT count(*) FROM {table} WHERE slot <> 0").scalar()
        for statement in _status_counts.fold_sql():
            conn.exec_driver_sql(statement)
        after = conn.exec_driver_sql(f"SELECT count(*) FROM {table} WHERE slot <> 0").scalar()
    assert before is not None
    assert before >= 2
    assert after == 0
    assert _kept(sysdb) == {PENDING: 200} == _counted(sysdb)


def test_truncate_empties_the_counts_on_postgres(sysdb: SystemDatabase) -> None:
    """TRUNCATE fires no row or DELETE trigger; its own trigger empties the counts."""
    if sysdb.sqlite:
        pytest.skip("SQLite has no TRUNCATE")
    with sysdb.engine.begin() as conn:
        _bulk_insert(conn, "t-", 1, 7, SUCCESS)
        conn.exec_driver_sql("TRUNCATE dbos.workflow_status CASCADE")
    assert _kept(sysdb) == {} == _counted(sysdb)


@DBOS.workflow()
def counted_ok(x: int) -> int:
    return x


@DBOS.workflow()
def counted_fails() -> None:
    raise ValueError("counted")


def test_the_first_scrape_installs_the_counts_and_they_follow_the_runtime(
    dbos: type[DBOS],
) -> None:
    """A launch alone installs nothing (the hot path pays for no trigger until the metric
    is read); the first scrape installs the counts. Then direct, failed, queued, cancelled
    and deleted workflows: ``spindle_workflows_total`` equals a count of the rows."""
    sysdb = dbos.runtime.sysdb
    assert counted_ok(-1) == -1
    with sysdb.engine.connect() as conn:
        assert not _status_counts.installed(conn)
    first = {f.name: f for f in database_families(dbos.runtime)}
    assert {s.labels[0]: s.value for s in first["spindle_workflows_total"].samples if s.value} == {
        SUCCESS: 1
    }
    with sysdb.engine.connect() as conn:
        assert _status_counts.installed(conn)
    for i in range(3):
        assert counted_ok(i) == i
    with pytest.raises(ValueError, match="counted"):
        counted_fails()
    handles = [counted_queue.enqueue(counted_ok, i) for i in range(4)]
    assert [h.get_result() for h in handles] == list(range(4))
    dbos.cancel_workflow(handles[0].workflow_id)  # already finished: stays SUCCESS
    dbos.delete_workflow(handles[1].workflow_id)
    families = {f.name: f for f in database_families(dbos.runtime)}
    reported = {s.labels[0]: int(s.value) for s in families["spindle_workflows_total"].samples}
    assert {k: v for k, v in reported.items() if v} == _counted(sysdb) == {SUCCESS: 7, ERROR: 1}
