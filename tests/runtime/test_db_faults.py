"""Database faults: transient errors are retried, never recorded, and no workflow is abandoned.

PostgreSQL's connections are killed for real (``pg_terminate_backend``, connections refused
with ``ALLOW_CONNECTIONS false``); SQLite's disk fills for real (a small tmpfs mounted by
the test, as root).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from spindle import DBOS, DBOSSystemDatabaseUnavailableError, SetWorkflowID
from spindle.diagnostics import capture_stack, waiting_on
from spindle.runtime._db_retry import Retrier, is_transient
from spindle.runtime._queue_db import _DEQUEUES, _with_landed, insert_enqueued
from spindle.runtime._schema import notifications
from spindle.runtime._sysdb import SystemDatabase
from spindle.runtime._sysdb_engine import ensure_postgres_database, normalize_url
from spindle.runtime._sysdb_hot import HotStatements
from tests.conftest import _pg_admin, new_postgres_url

WAIT = 120.0  # seconds a test waits for what should take a few


class _Seen(logging.Handler):
    """Sets an event when a log record's message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = threading.Event()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1
            self.event.set()


@contextlib.contextmanager
def _watch_log(text: str) -> Iterator[_Seen]:
    handler = _Seen(text)
    log = logging.getLogger("spindle")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


# -- the classifier, on real errors of each backend -------------------------------------------


def test_real_driver_errors_are_classified(db_url: str, tmp_path: Path) -> None:
    """A lost connection and a busy lock are transient; a constraint or syntax error is not."""
    if db_url.startswith("sqlite"):
        path = tmp_path / "busy.sqlite"
        holder = sqlite3.connect(path, isolation_level=None)
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            holder.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError) as busy:
                other.execute("BEGIN IMMEDIATE")
            holder.execute("INSERT INTO t VALUES (1)")
            holder.execute("COMMIT")
            with pytest.raises(sqlite3.IntegrityError) as dup:
                holder.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(sqlite3.OperationalError) as syntax:
                holder.execute("SELEC 1")
        finally:
            holder.close()
            other.close()
        assert is_transient(busy.value)
        assert not is_transient(dup.value)
        assert not is_transient(syntax.value)
        return
    ensure_postgres_database(db_url)
    engine = sa.create_engine(normalize_url(db_url))
    admin = _pg_admin()
    try:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with admin.connect() as a:
                a.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            with pytest.raises(sa.exc.OperationalError) as lost:
                conn.exec_driver_sql("SELECT 1")
        with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError) as bad:
            conn.exec_driver_sql("SELEC 1")
    finally:
        engine.dispose()
        admin.dispose()
    assert is_transient(lost.value)
    assert not is_transient(bad.value)


def _busy() -> sqlite3.OperationalError:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5
    return busy


def test_retrier_backs_off_logs_one_outage_and_stops_at_shutdown() -> None:
    """Transient failures are retried and logged once per outage; a permanent one is raised
    at once; a client call gives up after its limit; on a runtime thread only a closing
    database ends the retries, with the closed error."""
    closing = [False]
    retrier = Retrier(
        "system",
        is_closing=lambda: closing[0],
        closed=lambda exc: RuntimeError("closed"),
        client_retries=3,
    )
    failures = [_busy(), _busy(), _busy()]

    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    with _watch_log("failed transiently") as down, _watch_log("answers again") as up:
        assert retrier.call("op", flaky) == "ok"
    assert (down.count, up.count, retrier.outages, retrier.failures) == (1, 1, 1, 3)

    def permanent() -> None:
        raise ValueError("permanent")

    with pytest.raises(ValueError, match="permanent"):
        retrier.call("op", permanent)
    assert retrier.failures == 3

    def always_busy() -> None:
        raise _busy()

    with pytest.raises(DBOSSystemDatabaseUnavailableError, match="after 4 attempts") as err:
        retrier.call("reading", always_busy)  # this thread is the app's: a client call
    assert "database is locked" in str(err.value)

    def busy_until_shutdown() -> None:
        closing[0] = retrier.failures >= 12  # shutdown begins during the outage
        raise _busy()

    outcome: list[BaseException] = []

    def runtime_thread() -> None:
        try:
            retrier.call("op", busy_until_shutdown)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=runtime_thread, name="dbos-test-runtime")
    t.start()
    t.join()
    assert [str(e) for e in outcome] == ["closed"]
    assert retrier.failures >= 12  # past the client limit: runtime threads do not give up


# -- PostgreSQL: connections killed and refused ------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (these faults are PostgreSQL's); DBOS destroyed after."""
    yield from _destroying(new_postgres_url())


def _destroying(urls: Iterator[str]) -> Iterator[str]:
    for url in urls:
        try:
            yield url
        finally:
            DBOS.destroy()


def _terminate_all(admin: sa.Engine, database: str) -> int:
    with admin.connect() as conn:
        return len(
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": database},
            ).all()
        )


@DBOS.step()
def fault_step(i: int, k: int) -> int:
    return i * 10 + k


@DBOS.workflow()
def fault_worker(i: int) -> int:
    a = fault_step(i, 1)
    DBOS.sleep(0.2)
    b = fault_step(i, 2)
    DBOS.sleep(0.2)
    return a + b + fault_step(i, 3)


@DBOS.workflow()
def fault_receiver(i: int) -> str:
    got = DBOS.recv("fault", timeout_seconds=WAIT)
    return f"{i}:{got}"


@pytest.mark.slow
@pytest.mark.postgres_only
def test_connection_kills_for_10s_lose_nothing(pg_url: str) -> None:
    """Every backend of the database is terminated every 0.5 s for 10 s while 100 workflows
    with steps and durable sleeps run and 100 more wait in recv for messages sent meanwhile:
    all 200 end SUCCESS with their real results in this process (no relaunch), each message
    is received exactly once, and none is left over."""
    DBOS(
        config={
            "name": "faults",
            "system_database_url": pg_url,
            "run_admin_server": False,
            "max_executor_threads": 24,
            "sys_db_pool_size": 4,
            "notification_polling_interval_sec": 0.2,
        }
    )
    DBOS.launch()
    database = make_url(pg_url).database
    assert database is not None
    admin = _pg_admin()
    stop = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        while not stop.wait(0.5):
            kills.append(_terminate_all(admin, database))

    k = threading.Thread(target=killer, name="test-killer")
    try:
        k.start()
        handles: dict[str, Any] = {}
        for i in range(100):
            with SetWorkflowID(f"rx-{i}"):
                handles[f"rx-{i}"] = DBOS.start_workflow(fault_receiver, i)
            with SetWorkflowID(f"wk-{i}"):
                handles[f"wk-{i}"] = DBOS.start_workflow(fault_worker, i)
        for i in range(100):
            DBOS.send(f"rx-{i}", f"m{i}", "fault")
            if i % 10 == 9:
                stop.wait(0.9)  # the sends spread over the 10 s of kills
        stop.wait(max(0.0, 10.0 - 0.5 * len(kills)))
        stop.set()
        k.join()
        results = {wid: h.get_result() for wid, h in handles.items()}
    finally:
        stop.set()
        if k.is_alive():
            k.join()
        admin.dispose()
    assert len(kills) >= 15, kills  # the faults really happened
    assert sum(kills) >= 15, kills
    for i in range(100):
        assert results[f"wk-{i}"] == (i * 10 + 1) + (i * 10 + 2) + (i * 10 + 3)
        assert results[f"rx-{i}"] == f"{i}:m{i}"  # its own message: none lost, none twice
    statuses = {s.workflow_id: s.status for s in DBOS.list_workflows()}
    assert set(statuses.values()) == {"SUCCESS"}
    assert len(statuses) == 200
    with DBOS.runtime.sysdb.transaction(read=True) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(notifications)).scalar() == 0
    assert DBOS.runtime.sysdb.retrier.failures > 0  # they were retried, not lucky


GATES: dict[str, threading.Event] = {}
RUNS: dict[str, int] = {}


@DBOS.step()
def gated_step(name: str) -> str:
    RUNS[name] = RUNS.get(name, 0) + 1
    GATES[name].wait(WAIT)
    return "stepped"


@DBOS.workflow()
def gated_workflow(name: str) -> str:
    return gated_step(name) + "+done"


@pytest.mark.postgres_only
def test_outage_client_calls_give_up_workflows_do_not(pg_url: str) -> None:
    """With the database refusing connections, a client call retries its limit and raises
    one DBOS error naming the cause; a workflow whose step finished meanwhile keeps
    retrying its checkpoint and completes once the database is back (not re-run, not ERROR)."""
    DBOS(
        config={
            "name": "outage",
            "system_database_url": pg_url,
            "run_admin_server": False,
            "max_executor_threads": 4,
            "sys_db_pool_size": 2,
            "sys_db_client_retries": 2,
        }
    )
    DBOS.launch()
    database = make_url(pg_url).database
    assert database is not None
    admin = _pg_admin()
    GATES["outage"] = threading.Event()
    RUNS["outage"] = 0
    handle = DBOS.start_workflow(gated_workflow, "outage")
    retrier = DBOS.runtime.sysdb.retrier
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
        _terminate_all(admin, database)
        with pytest.raises(DBOSSystemDatabaseUnavailableError) as err:
            DBOS.list_workflows()
        assert "not currently accepting connections" in str(err.value)
        assert "after 3 attempts" in str(err.value)
        failures = retrier.failures
        GATES["outage"].set()  # the step returns; its checkpoint cannot be written yet
        # Well past a client's limit: the workflow's checkpoint keeps being retried.
        assert retrier.wait_for_failures(failures + 6, WAIT)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert handle.get_result() == "stepped+done"
    assert handle.get_status().status == "SUCCESS"
    assert RUNS["outage"] == 1  # re-recorded, never re-run


# -- what the registry shows: a thread waiting on a failing database ----------------------------


def _waiting_on(thread: threading.Thread, expected: str) -> str:
    """Spin (yielding the CPU) until ``thread``'s stack reads ``expected``, or give up."""
    assert thread.ident is not None
    deadline = time.monotonic() + 10.0
    seen = ""
    while time.monotonic() < deadline:
        seen = waiting_on(capture_stack(thread.ident) or [])
        if seen == expected:
            break
        os.sched_yield()
    return seen


def test_a_thread_backing_off_shows_as_a_database_retry() -> None:
    """A thread between retries of a failing database shows ``db:retry``, not ``event``."""
    stop = threading.Event()
    retrier = Retrier(
        "system",
        is_closing=stop.is_set,
        closed=lambda exc: RuntimeError("closed"),
        client_retries=10_000,
    )

    def always_busy() -> None:
        raise _busy()

    def body() -> None:
        with contextlib.suppress(RuntimeError):
            retrier.call("op", always_busy)

    t = threading.Thread(target=body, name="test-retrying")
    t.start()
    try:
        assert retrier.wait_for_failures(8, WAIT)  # backoffs of 1 s from here on
        assert _waiting_on(t, "db:retry") == "db:retry"
    finally:
        stop.set()
        retrier.wake()
        t.join()


def test_a_thread_waiting_for_a_pool_connection_shows_as_a_pool_wait(tmp_path: Path) -> None:
    """A thread waiting for a connection from a full pool shows ``db:pool``."""
    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'pool.sqlite'}",
        poolclass=sa.pool.QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=30,
    )
    held = engine.connect()
    t = threading.Thread(target=lambda: engine.connect().close(), name="test-pool-wait")
    t.start()
    try:
        assert _waiting_on(t, "db:pool") == "db:pool"
    finally:
        held.close()
        t.join()
        engine.dispose()


def test_a_retried_insert_that_had_landed_is_ours(db_url: str) -> None:
    """An insert whose commit landed but whose answer was lost is run again by the retry;
    finding its own row (same creator, millisecond and inputs) it reports "inserted", so
    the caller runs the workflow rather than taking it for someone else's."""
    db = SystemDatabase(db_url, pool_size=1)
    try:
        db.migrate()
        insert = HotStatements(db.sqlite).insert_workflow
        values: dict[str, Any] = {
            "workflow_uuid": "wf-ambiguous",
            "status": "PENDING",
            "name": "w",
            "inputs": b"in",
            "executor_id": "local",
            "application_version": "0",
            "created_at": 1000,
            "updated_at": 1000,
            "parent_workflow_id": None,
            "workflow_timeout_ms": None,
            "workflow_deadline_epoch_ms": None,
            "queue_name": None,
            "started_at_epoch_ms": 1000,
            "serialization": None,
        }
        assert db.insert_or_existing(insert.sql, insert.params(values), values) is None
        # The retry of the same statement: its row is there, and it is this insert's.
        assert db.insert_or_existing(insert.sql, insert.params(values), values) is None
        other = dict(values, executor_id="another-process", created_at=1001)
        row = db.insert_or_existing(insert.sql, insert.params(other), other)
        assert row is not None
        assert row.executor_id == "local"
    finally:
        db.close()


def test_rows_a_lost_dequeue_took_are_found_again(db_url: str) -> None:
    """A dequeue whose commit landed but whose answer was lost set rows PENDING; the retry's
    look-up by executor and start time finds them, so they start in this process."""
    db = SystemDatabase(db_url, pool_size=1)
    try:
        db.migrate()
        for i in range(3):
            insert_enqueued(
                db,
                workflow_id=f"q-{i}",
                name="w",
                inputs=b"in",
                queue_name="q",
                executor_id="local",
                application_version="0",
                parent_workflow_id=None,
                timeout_ms=None,
                deadline_epoch_ms=None,
                deduplication_id=None,
                priority=0,
            )
        now = 5_000
        lost = db.hot.write_returning(
            _DEQUEUES[db.sqlite, False], ("q", "0", 2, "local", now, now, now)
        )
        assert len(lost) == 2  # committed; the caller never saw these rows
        found = _with_landed(db, "q", "local", now, [])
        assert sorted(r[0] for r in found) == sorted(r[0] for r in lost)
        assert _with_landed(db, "q", "local", now, lost[:1]) == lost[:1] + [
            r for r in found if r[0] != lost[0][0]
        ]
        assert _with_landed(db, "q", "local", now + 1, []) == []
    finally:
        db.close()


@pytest.mark.postgres_only
def test_shutdown_during_an_outage_ends_the_retries(pg_url: str) -> None:
    """destroy() while the database refuses connections: the workflow retrying its
    checkpoint is interrupted (it stays PENDING, no error recorded), no thread outlives
    its join, and after the database is back a relaunch completes the workflow."""
    config: Any = {
        "name": "outage-stop",
        "system_database_url": pg_url,
        "run_admin_server": False,
        "max_executor_threads": 4,
        "sys_db_pool_size": 2,
        "thread_join_timeout_sec": 5.0,
    }
    DBOS(config=config)
    DBOS.launch()
    database = make_url(pg_url).database
    assert database is not None
    admin = _pg_admin()
    GATES["stop"] = threading.Event()
    RUNS["stop"] = 0
    with SetWorkflowID("outage-stop-wf"):
        DBOS.start_workflow(gated_workflow, "stop")
    retrier = DBOS.runtime.sysdb.retrier
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
        _terminate_all(admin, database)
        failures = retrier.failures
        GATES["stop"].set()
        assert retrier.wait_for_failures(failures + 3, WAIT)  # the checkpoint is retrying
        started = time.monotonic()
        DBOS.destroy()
        took = time.monotonic() - started
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert [v.rule for v in timeline.violations if v.rule == "join-timeout"] == []
    assert took < 5.0, f"destroy() took {took:.2f} s"
    DBOS(config=config)
    DBOS.launch()  # recovery: the step's checkpoint never landed, so the step runs again
    handle = DBOS.retrieve_workflow("outage-stop-wf")
    assert handle.get_result() == "stepped+done"
    assert handle.get_status().status == "SUCCESS"
    assert RUNS["stop"] == 2
