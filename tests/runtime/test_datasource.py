"""SQLAlchemyDatasource on both backends: one transaction commits the function's writes and
its record, a replay returns the record, errors replay, isolation levels, the table's schema,
inside a step and outside a workflow, and the retries that never run a committed function
twice."""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from spindle import DBOS, DBOSConfigError, DBOSException, SetWorkflowID, SQLAlchemyDatasource
from spindle.runtime._datasource import IsolationLevel
from spindle.runtime._serializer import Serializer
from spindle.runtime._sysdb_engine import ensure_postgres_database
from tests.conftest import MakeDBOS

#: The datasource of the running test (module-level functions below reach it here).
HOLD: dict[str, SQLAlchemyDatasource] = {}
#: How many times each function body ran in this test.
RUNS: collections.Counter[str] = collections.Counter()


@pytest.fixture
def ds_url(app_db_url: str) -> str:
    """The application database's URL, the database created (a datasource creates none)."""
    if not app_db_url.startswith("sqlite"):
        ensure_postgres_database(app_db_url)
    return app_db_url


@pytest.fixture
def ds(ds_url: str) -> Iterator[SQLAlchemyDatasource]:
    """A datasource on the test's application database, with a ``ledger`` table."""
    RUNS.clear()
    source = SQLAlchemyDatasource.create(ds_url)
    with source.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ledger (account TEXT, amount INTEGER)")
    HOLD["ds"] = source
    yield source
    HOLD.clear()
    source.engine.dispose()


def ledger(source: SQLAlchemyDatasource) -> list[tuple[str, int]]:
    """The ledger's rows, in insertion order."""
    with source.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT account, amount FROM ledger").all()
    return [(str(a), int(m)) for a, m in rows]


def recorded_rows(source: SQLAlchemyDatasource) -> list[tuple[str, int, bool, bool]]:
    """``(workflow_id, step_id, has_output, has_error)`` of every datasource_outputs row."""
    t = source.outputs
    with source.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.workflow_id, t.c.step_id, t.c.output, t.c.error).order_by(
                t.c.workflow_id, t.c.step_id
            )
        ).all()
    return [(w, s, o is not None, e is not None) for w, s, o, e in rows]


def credit(account: str, amount: int) -> int:
    """Insert a ledger row through the datasource's session; the account's new balance."""
    RUNS["credit"] += 1
    session = HOLD["ds"].sql_session()
    session.execute(
        sa.text("INSERT INTO ledger(account, amount) VALUES (:a, :m)"), {"a": account, "m": amount}
    )
    total = session.execute(
        sa.text("SELECT sum(amount) FROM ledger WHERE account = :a"), {"a": account}
    ).scalar_one()
    return int(total)


def overdraw(account: str) -> int:
    """Write, then fail: the write rolls back with the transaction."""
    RUNS["overdraw"] += 1
    HOLD["ds"].sql_session().execute(
        sa.text("INSERT INTO ledger(account, amount) VALUES (:a, -1000)"), {"a": account}
    )
    raise ValueError(f"{account} would be overdrawn")


@DBOS.step()
def ds_marker_step() -> str:
    """A step after the transactions, so a fork can start after them."""
    return "marked"


@DBOS.workflow()
def ds_ledger_workflow(account: str) -> tuple[int, str, str]:
    """A datasource transaction, a failing one (caught), then a step."""
    balance = HOLD["ds"].run_tx_step({"name": "credit"}, credit, account, 10)
    try:
        HOLD["ds"].run_tx_step(None, overdraw, account)
        failure = "none"
    except ValueError as exc:
        failure = str(exc)
    return balance, failure, ds_marker_step()


def test_a_transaction_commits_its_writes_and_its_record_and_is_the_workflows_step(
    make_dbos: MakeDBOS, ds: SQLAlchemyDatasource
) -> None:
    """In a workflow: the write and its datasource_outputs row commit together; the failing
    transaction's write rolled back and its error is recorded; both are steps."""
    make_dbos().launch()
    with SetWorkflowID("ds-ledger"):
        assert ds_ledger_workflow("alice") == (10, "alice would be overdrawn", "marked")
    assert ledger(ds) == [("alice", 10)]
    assert recorded_rows(ds) == [("ds-ledger", 1, True, False), ("ds-ledger", 2, False, True)]
    steps = DBOS.list_workflow_steps("ds-ledger")
    assert [(s["function_id"], s["function_name"]) for s in steps] == [
        (1, "credit"),
        (2, "overdraw"),
        (3, "ds_marker_step"),
    ]
    assert steps[0]["output"] == 10
    assert isinstance(steps[1]["error"], ValueError)


def test_a_replay_returns_the_recorded_output_and_error_without_running_them(
    make_dbos: MakeDBOS, ds: SQLAlchemyDatasource
) -> None:
    """A fork after the transactions replays both (output and error) from the record; a fork
    from the first step runs them again, under its own ID."""
    make_dbos().launch()
    with SetWorkflowID("ds-orig"):
        ds_ledger_workflow("bob")
    assert RUNS == {"credit": 1, "overdraw": 1}
    with SetWorkflowID("ds-fork-late"):
        handle = DBOS.fork_workflow("ds-orig", 3)
    assert handle.get_result() == (10, "bob would be overdrawn", "marked")
    assert RUNS == {"credit": 1, "overdraw": 1}
    with SetWorkflowID("ds-fork-early"):
        handle = DBOS.fork_workflow("ds-orig", 1)
    assert handle.get_result() == (20, "bob would be overdrawn", "marked")
    assert RUNS == {"credit": 2, "overdraw": 2}
    assert ledger(ds) == [("bob", 10), ("bob", 10)]


def test_the_decorator_names_the_step_and_runs_exactly_once_per_workflow_id(
    make_dbos: MakeDBOS, ds: SQLAlchemyDatasource
) -> None:
    """``@ds.transaction`` bare and with options; the same workflow ID does not run it again."""

    @ds.transaction
    def deposit(account: str) -> int:
        return credit(account, 1)

    @ds.transaction(name="named_deposit", isolation_level="READ COMMITTED")
    def deposit_named(account: str) -> int:
        return credit(account, 2)

    @DBOS.workflow()
    def ds_decorated_workflow() -> tuple[int, int]:
        return deposit("carol"), deposit_named("carol")

    make_dbos().launch()
    for _ in range(2):
        with SetWorkflowID("ds-decorated"):
            assert ds_decorated_workflow() == (1, 3)
    assert RUNS["credit"] == 2
    names = [s["function_name"] for s in DBOS.list_workflow_steps("ds-decorated")]
    assert names == [deposit.__qualname__, "named_deposit"]


ISOLATION_SQL = {
    "postgresql": "SELECT current_setting('transaction_isolation')",
    "sqlite": "PRAGMA read_uncommitted",
}


def test_each_isolation_level_applies_to_its_transaction(
    make_dbos: MakeDBOS, ds: SQLAlchemyDatasource
) -> None:
    """PostgreSQL runs each transaction at the level asked; SQLite (always serializable)
    accepts every level; an unknown one raises naming isolation_level."""
    levels: tuple[IsolationLevel, ...] = ("SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED")
    query = ISOLATION_SQL[ds.engine.dialect.name]

    def current_level() -> str:
        return str(ds.sql_session().execute(sa.text(query)).scalar_one())

    @DBOS.workflow()
    def ds_isolation_workflow() -> list[str]:
        return [ds.run_tx_step({"isolation_level": lvl}, current_level) for lvl in levels]

    make_dbos().launch()
    seen = ds_isolation_workflow()
    if ds.sqlite:
        assert seen == ["0", "0", "0"]  # no dirty reads, whatever was asked
    else:
        assert seen == [lvl.lower() for lvl in levels]
    with pytest.raises(DBOSConfigError, match="isolation_level"):
        ds.transaction(isolation_level="CHAOS")  # type: ignore[call-overload]
    with pytest.raises(DBOSConfigError, match="isolation_level"):
        ds.run_tx_step({"isolation_level": "CHAOS"}, current_level)  # type: ignore[arg-type]


def test_the_outputs_table_is_created_in_the_given_schema(ds_url: str) -> None:
    """PostgreSQL: datasource_outputs in ``schema`` (default ``dbos``); SQLite has no schema."""
    custom = SQLAlchemyDatasource.create(ds_url, schema="ledger_ds")
    default = SQLAlchemyDatasource.create(ds_url)
    try:
        inspector = sa.inspect(custom.engine)
        if custom.sqlite:
            assert (custom.schema, default.schema) == (None, None)
            assert "datasource_outputs" in inspector.get_table_names()
        else:
            assert (custom.schema, default.schema) == ("ledger_ds", "dbos")
            assert "datasource_outputs" in inspector.get_table_names(schema="ledger_ds")
            assert "datasource_outputs" in inspector.get_table_names(schema="dbos")
        custom.run_migrations()  # again: nothing to do, no error
    finally:
        custom.engine.dispose()
        default.engine.dispose()


@DBOS.step()
def ds_step_with_transaction(account: str) -> int:
    """A step whose body runs a datasource transaction."""
    return HOLD["ds"].run_tx_step(None, credit, account, 7)


@DBOS.workflow()
def ds_step_workflow(account: str) -> int:
    """The transaction inside a step."""
    return ds_step_with_transaction(account)


def test_inside_a_step_the_transaction_just_runs_and_the_step_is_the_record(
    make_dbos: MakeDBOS, ds: SQLAlchemyDatasource
) -> None:
    """As DBOS: in a step the transaction commits with no datasource_outputs row of its own;
    the step's checkpoint is the one record."""
    make_dbos().launch()
    with SetWorkflowID("ds-in-step"):
        assert ds_step_workflow("dan") == 7
    assert ledger(ds) == [("dan", 7)]
    assert recorded_rows(ds) == []
    steps = DBOS.list_workflow_steps("ds-in-step")
    assert [s["function_name"] for s in steps] == ["ds_step_with_transaction"]


def test_outside_a_workflow_the_transaction_just_runs(
    make_dbos: MakeDBOS, ds: SQLAlchemyDatasource
) -> None:
    """Outside a workflow (launched or not) it runs in a transaction, records nothing and
    starts no workflow; its error rolls its write back; sql_session outside one raises."""
    assert ds.run_tx_step(None, credit, "erin", 3) == 3
    with pytest.raises(ValueError, match="overdrawn"):
        ds.run_tx_step(None, overdraw, "erin")
    make_dbos().launch()
    assert ds.run_tx_step(None, credit, "erin", 4) == 7
    assert ledger(ds) == [("erin", 3), ("erin", 4)]
    assert recorded_rows(ds) == []
    assert DBOS.list_workflows() == []
    with pytest.raises(DBOSException, match="within a sync datasource transaction"):
        ds.sql_session()


class Upper(Serializer):
    """A JSON-free toy serializer: strings only, stored upper-cased with a marker."""

    def serialize(self, data: Any) -> str:
        return "U:" + str(data).upper()

    def deserialize(self, serialized_data: str) -> Any:
        return serialized_data.removeprefix("U:")

    def name(self) -> str:
        return "upper"


@DBOS.workflow()
def ds_serializer_workflow() -> str:
    """One transaction returning a string."""
    return HOLD["ds"].run_tx_step({"name": "greet"}, lambda: "hello")


def test_outputs_are_written_with_the_given_serializer(make_dbos: MakeDBOS, ds_url: str) -> None:
    """The datasource_outputs row holds the serializer's text and its name; the default
    is pickle (``py_pickle``), as DBOS 2.30's; bad arguments raise naming their key."""
    source = SQLAlchemyDatasource.create(ds_url, serializer=Upper())
    HOLD["ds"] = source
    try:
        make_dbos().launch()
        with SetWorkflowID("ds-ser"):
            assert ds_serializer_workflow() == "hello"
        t = source.outputs
        with source.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.output, t.c.serialization)).one()
        assert tuple(row) == ("U:HELLO", "upper")
        default = SQLAlchemyDatasource(
            database_url=ds_url, engine_kwargs={}, engine=None, schema=None, serializer=None
        )
        assert default.serializer.name() == "py_pickle"
        with pytest.raises(DBOSConfigError, match="'serializer'"):
            SQLAlchemyDatasource.create(ds_url, serializer="json")  # type: ignore[arg-type]
        with pytest.raises(DBOSConfigError, match="'schema'"):
            SQLAlchemyDatasource.create(ds_url, schema="")
        with pytest.raises(DBOSConfigError, match="'engine'"):
            SQLAlchemyDatasource.create(ds_url, engine="nope")  # type: ignore[arg-type]
    finally:
        HOLD.clear()
        source.engine.dispose()


def test_a_coroutine_function_is_refused_by_the_sync_datasource(ds: SQLAlchemyDatasource) -> None:
    """``@ds.transaction`` on an async def raises at decoration, pointing at the async one."""

    async def deposit_async() -> int:
        return 0

    with pytest.raises(DBOSException, match="AsyncSQLAlchemyDatasource"):
        ds.transaction(deposit_async)


def _lock_out(source: SQLAlchemyDatasource, account: str) -> None:
    """Make this attempt fail as the database would under contention: a serialization
    failure (PostgreSQL) or a busy database (SQLite). Runs inside the transaction."""
    session = source.sql_session()
    other = sa.create_engine(source.engine.url, isolation_level="AUTOCOMMIT")
    try:
        if source.sqlite:
            with other.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # holds the write lock
                try:
                    session.execute(
                        sa.text("INSERT INTO ledger(account, amount) VALUES (:a, 0)"),
                        {"a": account},
                    )
                finally:
                    conn.exec_driver_sql("ROLLBACK")
        else:
            session.execute(sa.text("SELECT count(*) FROM ledger")).scalar_one()  # snapshot
            with other.connect() as conn:
                conn.exec_driver_sql("UPDATE ledger SET amount = amount + 1")
            session.execute(sa.text("UPDATE ledger SET amount = amount + 1"))  # 40001
    finally:
        other.dispose()


def contended(account: str) -> int:
    """First attempt: contention rolls it back; the next one commits."""
    RUNS["contended"] += 1
    if RUNS["contended"] == 1:
        _lock_out(HOLD["ds"], account)
    return credit(account, 1)


@DBOS.workflow()
def ds_contended_workflow(account: str) -> int:
    """A transaction that meets contention once."""
    return HOLD["ds"].run_tx_step(None, contended, account)


@pytest.mark.parametrize("in_workflow", [True, False], ids=["workflow", "plain"])
def test_a_transaction_the_database_rolled_back_runs_again(
    make_dbos: MakeDBOS, ds_url: str, in_workflow: bool
) -> None:
    """A serialization failure (PostgreSQL 40001) or SQLite busy rolled the transaction
    back: it runs again, in a workflow or not, and commits once."""
    RUNS.clear()
    # SQLite: give up on the lock at once instead of the driver's 5 s wait.
    source = SQLAlchemyDatasource.create(
        ds_url,
        engine_kwargs={"connect_args": {"timeout": 0.05}} if ds_url.startswith("sqlite") else {},
    )
    HOLD["ds"] = source
    try:
        with source.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE ledger (account TEXT, amount INTEGER)")
            conn.exec_driver_sql("INSERT INTO ledger VALUES ('seed', 0)")
        make_dbos().launch()
        if in_workflow:
            assert ds_contended_workflow("fay") == 1
        else:
            assert source.run_tx_step(None, contended, "fay") == 1
        assert RUNS["contended"] == 2
        assert [row for row in ledger(source) if row[0] == "fay"] == [("fay", 1)]
    finally:
        HOLD.clear()
        source.engine.dispose()


def _lose_next_commit_answer(source: SQLAlchemyDatasource) -> list[int]:
    """The next commit lands, then its answer is lost (the connection error a client sees
    when the server dies right after committing). Returns the count of answers lost."""
    dialect = source.engine.dialect
    real = dialect.do_commit
    lost: list[int] = []

    def do_commit(dbapi_connection: Any) -> None:
        real(dbapi_connection)
        if not lost:
            lost.append(1)
            if source.sqlite:
                raise sqlite3.OperationalError("disk I/O error")
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    return lost


@DBOS.workflow()
def ds_ambiguous_workflow(account: str) -> int:
    """One transaction whose commit's answer is lost."""
    return HOLD["ds"].run_tx_step({"name": "credit"}, credit, account, 5)


def test_a_commit_whose_answer_was_lost_is_settled_from_its_record_not_run_again(
    make_dbos: MakeDBOS, ds: SQLAlchemyDatasource
) -> None:
    """A transient error after the commit landed: the retry reads the datasource_outputs
    row and returns its output; the function ran once, and its write is there once."""
    make_dbos().launch()
    lost = _lose_next_commit_answer(ds)
    with SetWorkflowID("ds-ambiguous"):
        assert ds_ambiguous_workflow("gus") == 5
    assert lost == [1]
    assert RUNS["credit"] == 1
    assert ledger(ds) == [("gus", 5)]
    assert ds.retrier.failures == 1
    assert [s["output"] for s in DBOS.list_workflow_steps("ds-ambiguous")] == [5]


def test_outside_a_workflow_a_lost_commit_answer_is_raised_not_run_again(
    ds: SQLAlchemyDatasource,
) -> None:
    """Outside a workflow nothing records the commit, so an error that may follow one (a
    lost connection) is raised, never retried: the function ran once, its write stands."""
    _lose_next_commit_answer(ds)
    with pytest.raises(sa.exc.OperationalError):
        ds.run_tx_step(None, credit, "hank", 1)
    assert RUNS["credit"] == 1
    assert ledger(ds) == [("hank", 1)]


@DBOS.workflow()
def ds_taken_workflow(account: str) -> int:
    """One transaction, whose checkpoint key another execution took first."""
    return HOLD["ds"].run_tx_step({"name": "credit"}, credit, account, 9)


def test_a_taken_checkpoint_rolls_the_writes_back_and_returns_the_recorded_output(
    make_dbos: MakeDBOS, ds: SQLAlchemyDatasource
) -> None:
    """Another execution recorded this step first: this one's writes roll back with its
    failed checkpoint insert (one transaction, SQLite too), and its outcome wins."""
    with ds.engine.begin() as conn:
        conn.execute(
            ds.outputs.insert().values(
                workflow_id="ds-taken",
                step_id=1,
                output=ds.serializer.serialize(42),
                serialization=ds.serializer.name(),
            )
        )
    make_dbos().launch()
    with SetWorkflowID("ds-taken"):
        assert ds_taken_workflow("ida") == 42
    assert RUNS["credit"] == 1
    assert ledger(ds) == []
    assert [s["output"] for s in DBOS.list_workflow_steps("ds-taken")] == [42]
