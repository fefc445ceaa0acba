"""The application database: ``@DBOS.transaction`` functions, checkpointed in their own
transaction so each runs exactly once."""

from __future__ import annotations

import contextvars
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._db_retry import Retrier
from ._durable import Call, Effect
from ._rows import now_ms
from ._schema import SCHEMA
from ._serialization import deserialize, deserialize_exception, serialize, serialize_exception
from ._sql_tx import AlreadyRecorded, Checkpoint, isolated, run_sync
from ._sysdb_engine import ensure_postgres_database, make_engine
from ._sysdb_gate import SystemDatabaseClosed
from ._tx_op import Done, Thunk

_metadata = sa.MetaData(schema=SCHEMA)

transaction_outputs = sa.Table(
    "transaction_outputs",
    _metadata,
    sa.Column("workflow_uuid", sa.Text, primary_key=True),
    sa.Column("function_id", sa.Integer, primary_key=True),
    sa.Column("output", sa.LargeBinary, nullable=True),
    sa.Column("error", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)


current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "spindle_sql_session", default=None
)


class ApplicationDatabase:
    """The app's own database, where transactions and their checkpoints commit together."""

    def __init__(self, url: str, *, pool_size: int = 20, sqlite_synchronous: str = "FULL"):
        if not url.startswith("sqlite"):
            ensure_postgres_database(url)
        self.engine = make_engine(url, pool_size=pool_size, sqlite_synchronous=sqlite_synchronous)
        self.sqlite = url.startswith("sqlite")
        self._closed = False
        #: Counts and logs the transient failures transactions retry (once per outage).
        self.retrier = Retrier(
            "application",
            is_closing=lambda: self._closed,
            closed=lambda exc: SystemDatabaseClosed("the application database is closed"),
        )

    def migrate(self) -> None:
        """Create the checkpoint table."""
        with self.engine.begin() as conn:
            if not self.sqlite:
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            transaction_outputs.create(conn, checkfirst=True)

    def transact(
        self, call: Call, name: str, key: tuple[str, int] | None, isolation: str | None
    ) -> Effect:
        """An effect running ``call`` in one transaction with ``DBOS.sql_session`` bound to
        it and, under ``key``, its checkpoint inserted in the same transaction."""
        return Thunk(lambda: self.run(call, name, key, isolation))

    def lookup(self, workflow_id: str, function_id: int) -> Effect:
        """An effect answering the recorded outcome of one transaction, if it committed."""
        return Thunk(lambda: self.recorded(workflow_id, function_id))

    def record_error(self, workflow_id: str, function_id: int, error: BaseException) -> Effect:
        """An effect recording a transaction's error (its own transaction rolled back)."""
        return Thunk(lambda: self.insert_error(workflow_id, function_id, error))

    def run(self, call: Call, name: str, key: tuple[str, int] | None, isolation: str | None) -> Any:
        """Run ``call`` in one transaction (see :meth:`transact`)."""
        self._check()
        engine = isolated(self.engine, isolation, sqlite=self.sqlite)
        checkpoint: Checkpoint | None = None
        if key is not None:
            wf_id, fid = key
            checkpoint = (
                transaction_outputs,
                lambda value: {
                    "workflow_uuid": wf_id,
                    "function_id": fid,
                    "output": serialize(value, f"the output of transaction {name!r}"),
                    "error": None,
                    "created_at": now_ms(),
                },
            )
        return run_sync(engine, call, current_session, checkpoint, "create_savepoint")

    def recorded(self, workflow_id: str, function_id: int) -> Done | None:
        """The recorded outcome of one transaction, if it committed."""
        self._check()
        t = transaction_outputs
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.output, t.c.error).where(
                    t.c.workflow_uuid == workflow_id, t.c.function_id == function_id
                )
            ).one_or_none()
        if row is None:
            return None
        if row[1] is not None:
            return Done(None, deserialize_exception(row[1]))
        return Done(deserialize(row[0]), None)

    def insert_error(self, workflow_id: str, function_id: int, error: BaseException) -> None:
        """Record a transaction's error; :class:`AlreadyRecorded` if its id was taken."""
        self._check()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    transaction_outputs.insert().values(
                        workflow_uuid=workflow_id,
                        function_id=function_id,
                        output=None,
                        error=serialize_exception(error),
                        created_at=now_ms(),
                    )
                )
        except IntegrityError as exc:
            raise AlreadyRecorded() from exc

    def _check(self) -> None:
        if self._closed:
            raise SystemDatabaseClosed("the application database is closed (destroy() ran)")

    def close(self) -> None:
        """Dispose the engine."""
        self._closed = True
        self.engine.dispose()
