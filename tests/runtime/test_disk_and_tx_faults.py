"""Disk full (SQLite on a small tmpfs) and faults of ``@DBOS.transaction``'s database.

The tmpfs is mounted by the test (root only; skipped otherwise with one line).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from spindle import DBOS, SetWorkflowID
from spindle.runtime._sysdb_engine import normalize_url
from tests.conftest import _pg_admin, new_postgres_url
from tests.runtime.test_db_faults import GATES, WAIT, _terminate_all, _watch_log


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database; DBOS destroyed after."""
    for url in new_postgres_url():
        try:
            yield url
        finally:
            DBOS.destroy()


# -- SQLite: the disk fills up and is freed ------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs mounted for this test (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
        while True:  # the last partial block
            try:
                f.write(b"\0" * 512)
            except OSError:
                break


@DBOS.step()
def big_step(i: int, gate: str | None) -> str:
    if gate is not None:
        GATES[gate].wait(WAIT)
    return f"{i}:" + "x" * 100_000  # new pages: the WAL must grow to record it


@DBOS.workflow()
def disk_workflow(i: int, gate: str) -> int:
    first = big_step(i, None)
    second = big_step(i, gate)
    return len(first) + len(second)


def test_disk_full_then_freed_every_workflow_completes(small_disk: Path) -> None:
    """SQLite on a 16 MB tmpfs: the disk fills while 10 workflows are in flight; their
    checkpoints fail with "database or disk is full" and are retried (logged once), and
    once space is freed every one completes in this process with its real result."""
    DBOS(
        config={
            "name": "diskfull",
            "system_database_url": f"sqlite:///{small_disk / 'sys.sqlite'}",
            "run_admin_server": False,
            "max_executor_threads": 12,
        }
    )
    try:
        DBOS.launch()
        gate = GATES["disk"] = threading.Event()
        handles = []
        for i in range(10):
            with SetWorkflowID(f"disk-{i}-{uuid.uuid4().hex[:6]}"):
                handles.append(DBOS.start_workflow(disk_workflow, i, "disk"))
        filler = small_disk / "filler"
        with _watch_log("failed transiently") as down:
            _fill(filler)
            gate.set()  # every second step returns now: its checkpoint meets a full disk
            assert down.event.wait(WAIT), "no checkpoint met the full disk"
            # The disk stays full through many retries, not just the first failure.
            assert DBOS.runtime.sysdb.retrier.wait_for_failures(20, WAIT)
            filler.unlink()
        expected = [len(f"{i}:") * 2 + 200_000 for i in range(10)]
        assert [h.get_result() for h in handles] == expected
        statuses = {h.get_status().status for h in handles}
        assert statuses == {"SUCCESS"}
        with sqlite3.connect(small_disk / "sys.sqlite") as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        DBOS.destroy()


# -- the application database: @DBOS.transaction --------------------------------------------


TX_ATTEMPTS: list[int] = []
TX_HELD = threading.Event()


@DBOS.transaction()
def fault_tx(value: str) -> int:
    TX_ATTEMPTS.append(1)
    session = DBOS.sql_session
    session.execute(sa.text("INSERT INTO items(value) VALUES (:v)"), {"v": value})
    if len(TX_ATTEMPTS) == 1:
        TX_HELD.set()
        GATES["tx"].wait(WAIT)  # the test kills this transaction's connection meanwhile
    return int(session.execute(sa.text("SELECT count(*) FROM items")).scalar_one())


@DBOS.workflow()
def fault_tx_workflow(value: str) -> int:
    return fault_tx(value)


@pytest.mark.postgres_only
def test_transaction_on_a_killed_connection_runs_again(pg_url: str) -> None:
    """A transaction whose connection is terminated mid-way rolled back: it runs again
    (not recorded as an error), commits once, and its workflow ends SUCCESS."""
    app_urls = new_postgres_url()
    app_url = next(app_urls)
    try:
        DBOS(
            config={
                "name": "txfault",
                "system_database_url": pg_url,
                "application_database_url": app_url,
                "run_admin_server": False,
                "sys_db_pool_size": 2,
            }
        )
        DBOS.launch()
        engine = sa.create_engine(normalize_url(app_url))
        admin = _pg_admin()
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE items (value TEXT)")
            TX_ATTEMPTS.clear()
            TX_HELD.clear()
            GATES["tx"] = threading.Event()
            handle = DBOS.start_workflow(fault_tx_workflow, "a")
            assert TX_HELD.wait(WAIT)
            database = make_url(app_url).database
            assert database is not None
            assert _terminate_all(admin, database) >= 1
            GATES["tx"].set()
            assert handle.get_result() == 1
            assert handle.get_status().status == "SUCCESS"
            assert len(TX_ATTEMPTS) == 2  # the rolled-back attempt, then the one that counts
            engine.dispose()  # its pooled connection was terminated with the others
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT count(*) FROM items").scalar_one() == 1
            assert DBOS.runtime.appdb is not None
            assert DBOS.runtime.appdb.retrier.failures >= 1
        finally:
            engine.dispose()
            admin.dispose()
            DBOS.destroy()
    finally:
        next(app_urls, None)  # drops the application database


def test_transaction_on_a_full_disk_runs_again_once_freed(small_disk: Path) -> None:
    """SQLite: a transaction whose commit meets a full disk rolled back; it runs again
    until space is freed, commits once, and its workflow ends SUCCESS."""
    app = small_disk / "app.sqlite"
    DBOS(
        config={
            "name": "txdisk",
            "system_database_url": f"sqlite:///{small_disk / 'sys.sqlite'}",
            "application_database_url": f"sqlite:///{app}",
            "run_admin_server": False,
        }
    )
    try:
        DBOS.launch()
        with sqlite3.connect(app) as conn:
            conn.execute("CREATE TABLE items (value TEXT)")
        conn.close()
        TX_ATTEMPTS.clear()
        TX_HELD.clear()
        GATES["tx"] = threading.Event()
        handle = DBOS.start_workflow(fault_tx_workflow, "v" * 500_000)
        assert TX_HELD.wait(WAIT)
        filler = small_disk / "filler"
        _fill(filler)
        GATES["tx"].set()  # its commit now needs pages the disk does not have
        assert DBOS.runtime.appdb is not None
        assert DBOS.runtime.appdb.retrier.wait_for_failures(3, WAIT)
        filler.unlink()
        assert handle.get_result() == 1
        assert handle.get_status().status == "SUCCESS"
        assert len(TX_ATTEMPTS) >= 2
        with sqlite3.connect(app) as check:
            assert check.execute("SELECT count(*) FROM items").fetchone() == (1,)
        check.close()
    finally:
        DBOS.destroy()
