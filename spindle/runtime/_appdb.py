"""The application database: ``@DBOS.transaction`` functions, checkpointed in their own
transaction so each runs exactly once."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._db_retry import Retrier
from ._rows import now_ms
from ._schema import SCHEMA
from ._sysdb_engine import ensure_postgres_database, make_engine
from ._sysdb_gate import SystemDatabaseClosed

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


class _Outcome:
    """The result a transaction's block hands back to :meth:`ApplicationDatabase.transaction`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None


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

    def recorded(
        self, workflow_id: str, function_id: int
    ) -> tuple[bytes | None, bytes | None] | None:
        """The recorded (output, error) of one transaction, if it committed."""
        self._check()
        t = transaction_outputs
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.output, t.c.error).where(
                    t.c.workflow_uuid == workflow_id, t.c.function_id == function_id
                )
            ).one_or_none()
        return (row[0], row[1]) if row is not None else None

    @contextlib.contextmanager
    def transaction(
        self,
        *,
        workflow_id: str | None,
        function_id: int | None,
        serialize_output: Callable[[Any], bytes],
        isolation_level: str | None,
    ) -> Iterator[_Outcome]:
        """One transaction around the caller's block, with ``DBOS.sql_session`` bound to it.

        The block stores its result in the yielded outcome; the result's checkpoint is
        inserted in the same transaction, so the work and its record commit together.
        """
        self._check()
        engine = self.engine
        if isolation_level is not None and not self.sqlite:
            engine = engine.execution_options(isolation_level=isolation_level)
        outcome = _Outcome()
        with engine.begin() as conn:
            session = Session(bind=conn, join_transaction_mode="create_savepoint")
            token = current_session.set(session)
            try:
                yield outcome
                session.commit()  # releases its savepoint; the outer transaction is ours
            finally:
                current_session.reset(token)
                session.close()
            if workflow_id is not None and function_id is not None:
                conn.execute(
                    transaction_outputs.insert().values(
                        workflow_uuid=workflow_id,
                        function_id=function_id,
                        output=serialize_output(outcome.value),
                        error=None,
                        created_at=now_ms(),
                    )
                )

    def record_error(self, workflow_id: str, function_id: int, error: bytes) -> None:
        """Record a transaction's error (its own transaction rolled back)."""
        self._check()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    transaction_outputs.insert().values(
                        workflow_uuid=workflow_id,
                        function_id=function_id,
                        output=None,
                        error=error,
                        created_at=now_ms(),
                    )
                )
        except IntegrityError:
            pass  # recorded by another execution of the same workflow

    def _check(self) -> None:
        if self._closed:
            raise SystemDatabaseClosed("the application database is closed (destroy() ran)")

    def close(self) -> None:
        """Dispose the engine."""
        self._closed = True
        self.engine.dispose()
