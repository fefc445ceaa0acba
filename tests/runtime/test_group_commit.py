"""SQLite group commit: writers queued for the write lock share one transaction."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from spindle.diagnostics import capture_stack, waiting_on
from spindle.diagnostics._waiting import DB_SQLITE
from spindle.runtime._group_commit import GroupCommit, WriteRequest
from spindle.runtime._rows import SUCCESS
from spindle.runtime._schema import SCHEMA, operation_outputs, workflow_status
from spindle.runtime._sysdb import SystemDatabase
from spindle.runtime._sysdb_engine import normalize_url
from tests._waits import wait_until
from tests.runtime.test_sysdb import _insert

WAIT = 10.0


def _start(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    th = threading.Thread(target=body)
    th.start()
    return th, outcome


@pytest.fixture
def sqlite_db(db_url: str) -> Iterator[SystemDatabase]:
    if not db_url.startswith("sqlite"):
        pytest.skip("group commit is SQLite's (PostgreSQL commits concurrently by itself)")
    db = SystemDatabase(db_url, pool_size=2)
    db.migrate()
    yield db
    db.close()


def _queued(db: SystemDatabase) -> int:
    assert db.hot.group is not None
    with db.hot.group._lock:
        return len(db.hot.group._queue)


Run = tuple[threading.Thread, list[Any]]


@contextlib.contextmanager
def _turn_taken(db: SystemDatabase) -> Iterator[Callable[[Callable[[], Any]], Run]]:
    """Hold the write turn, as an _op writer does; yields ``queue(call)``, which starts a
    writer and returns once it has queued (so writers queue in the order started)."""
    lock = db.gate.write_lock
    assert lock is not None
    runs: list[Run] = []

    def queue(call: Callable[[], Any]) -> Run:
        runs.append(_start(call))
        wait_until(lambda: _queued(db) == len(runs), "every writer queued", WAIT)
        return runs[-1]

    lock.acquire()
    try:
        yield queue
    finally:
        lock.release()
        for th, _ in runs:
            th.join(WAIT)


def test_writers_queued_meanwhile_share_one_commit_and_keep_their_outcomes(
    sqlite_db: SystemDatabase,
) -> None:
    """Five writers queue while the write lock is taken; they commit as one batch, and the
    one whose step is already recorded gets "conflict" without failing the other four."""
    db = sqlite_db
    group = db.hot.group
    assert group is not None
    _insert(db, "a")
    assert db.record_step("a", 0, "s", output=b"first", error=None) == "recorded"
    before = (group.batches, group.statements)
    with _turn_taken(db) as queue:
        runs = [
            queue(functools.partial(db.record_step, "a", fid, "s", output=b"o", error=None))
            for fid in range(5)  # fid 0 is taken
        ]
    outcomes = [out for _, out in runs]
    assert outcomes == [["conflict"], ["recorded"], ["recorded"], ["recorded"], ["recorded"]]
    assert (group.batches - before[0], group.statements - before[1]) == (1, 5)
    steps = db.step_outputs("a")
    assert sorted(steps) == [0, 1, 2, 3, 4]
    assert steps[0].output == b"first"


def _waits_on_sqlite(thread: threading.Thread) -> bool:
    assert thread.ident is not None
    return waiting_on(capture_stack(thread.ident) or []) == DB_SQLITE


def test_writers_waiting_their_turn_show_as_database_waits(sqlite_db: SystemDatabase) -> None:
    """The dashboard's waiting_on for a leader waiting for the write turn and a follower
    waiting for the leader's commit: db:sqlite3, not an anonymous lock."""
    db = sqlite_db
    _insert(db, "a")
    with _turn_taken(db) as queue:
        leader = queue(lambda: db.record_step("a", 1, "s", output=b"o", error=None))
        follower = queue(lambda: db.record_step("a", 2, "s", output=b"o", error=None))
        for th, _ in (leader, follower):
            wait_until(
                functools.partial(_waits_on_sqlite, th), "the writer waiting on SQLite", WAIT
            )
    assert (leader[1], follower[1]) == (["recorded"], ["recorded"])


def test_a_bad_parameter_fails_only_its_writer(sqlite_db: SystemDatabase) -> None:
    """A statement-level error other than a constraint (a value SQLite cannot bind) fails
    that writer; the batch's other statements commit."""
    db = sqlite_db
    _insert(db, "a")
    with _turn_taken(db) as queue:
        good = queue(lambda: db.record_step("a", 1, "s", output=b"o", error=None))
        bad = queue(lambda: db.record_step("a", 2, "s", output=object(), error=None))  # type: ignore[arg-type]
        finish = queue(lambda: db.finish_workflow("a", SUCCESS, output=b"r", error=None))
    assert good[1] == ["recorded"]
    assert isinstance(bad[1][0], sa.exc.DBAPIError)
    assert finish[1] == [True]
    assert sorted(db.step_outputs("a")) == [1]
    row = db.get_status("a")
    assert row is not None
    assert row.status == SUCCESS


@pytest.fixture
def any_db(db_url: str) -> Iterator[SystemDatabase]:
    db = SystemDatabase(db_url, pool_size=2)
    db.migrate()
    yield db
    db.close()


def test_every_acknowledged_write_is_in_the_database(any_db: SystemDatabase, db_url: str) -> None:
    """Sixteen threads write 40 workflows each: every write acknowledged is there, read
    through a separate connection; on SQLite some of them shared a commit."""
    db = any_db
    group = db.hot.group
    before = (group.batches, group.statements) if group is not None else (0, 0)
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def worker(t: int) -> None:
        try:
            start.wait(WAIT)
            for i in range(40):
                wf = f"w{t}-{i}"
                assert _insert(db, wf) is None
                assert db.record_step(wf, 1, "s", output=b"o", error=None) == "recorded"
                assert db.finish_workflow(wf, SUCCESS, output=b"r", error=None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    if group is not None:
        statements = group.statements - before[1]
        batches = group.batches - before[0]
        assert statements == 16 * 40 * 3
        assert batches < statements  # some writers shared a commit
    check = sa.create_engine(normalize_url(db_url)).execution_options(
        schema_translate_map={SCHEMA: None} if db.sqlite else {}
    )
    try:
        with check.connect() as conn:
            done = conn.execute(
                sa.select(sa.func.count()).where(workflow_status.c.status == SUCCESS)
            ).scalar()
            steps = conn.execute(sa.select(sa.func.count()).select_from(operation_outputs)).scalar()
    finally:
        check.dispose()
    assert (done, steps) == (640, 640)


def test_a_runner_that_breaks_off_fails_its_batch_and_hands_on_the_lead() -> None:
    """If a batch runner raises, every writer of the batch gets the error (none hangs), and
    the next writer leads a new batch."""
    calls: list[int] = []

    def runner(take: Callable[[], list[WriteRequest]]) -> None:
        batch = take()
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError("disk gone")
        for request in batch:
            request.succeed(1)

    group = GroupCommit(runner)
    with pytest.raises(OSError, match="disk gone"):
        group.submit("first", ())
    assert group.submit("second", ()).rowcount == 1
    assert calls == [1, 1]
    assert not group._leading


def test_a_runner_that_fails_before_taking_fails_the_leader_too() -> None:
    """A runner that raises before take() (no connection, say) still ends its leader's wait
    with the error; the queue is left empty and the lead free."""

    def runner(take: Callable[[], list[WriteRequest]]) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    group = GroupCommit(runner)
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        group.submit("x", ())
    assert group._queue == []
    assert not group._leading
