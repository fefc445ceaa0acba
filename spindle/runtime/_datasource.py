"""DBOS's datasources: a function run in one transaction of the application's own database,
exactly once per workflow (``SQLAlchemyDatasource``; the async twin in
:mod:`._datasource_async`).

The function's writes and its checkpoint (a row of ``datasource_outputs`` in that database)
commit together; the outcome is also the workflow's step in the system database, as DBOS
records it, so ``list_workflow_steps`` shows it and a replay reads it there first. The
``datasource_outputs`` row settles the one window the step cannot: a crash (or a lost
answer) after the commit and before the step was recorded.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypedDict, TypeVar, cast, overload

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import _current
from ._db_retry import Retrier
from ._durable import Call, Effect, drive
from ._errors import DBOSConfigError, DBOSException
from ._functions import function_name, is_async
from ._serializer import PICKLE_FORMAT, DefaultSerializer, Serializer
from ._sql_tx import AlreadyRecorded, Checkpoint, isolated, run_sync
from ._tx_op import Done, Thunk, transactional

__all__ = ["DatasourceOptions", "IsolationLevel", "SQLAlchemyDatasource"]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")

IsolationLevel = Literal["SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED"]
ISOLATION_LEVELS: tuple[str, ...] = ("SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED")
#: DBOS's default schema of ``datasource_outputs`` on PostgreSQL (SQLite has none).
DEFAULT_SCHEMA = "dbos"


class DatasourceOptions(TypedDict, total=False):
    """``run_tx_step``'s options: the step's name and the transaction's isolation level."""

    name: str | None
    isolation_level: IsolationLevel | None


def outputs_table(schema: str | None, *, sqlite: bool) -> sa.Table:
    """``datasource_outputs``: one row per transaction run in a workflow, keyed by the
    workflow and its step id (the columns DBOS 2.30 creates, so either can share one)."""
    now_ms = (
        "(strftime('%s','now') * 1000)"
        if sqlite
        else "((EXTRACT(EPOCH FROM now()) * 1000)::bigint)"
    )
    return sa.Table(
        "datasource_outputs",
        sa.MetaData(schema=schema),
        sa.Column("workflow_id", sa.Text, primary_key=True),
        sa.Column("step_id", sa.Integer, primary_key=True),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("serialization", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False, server_default=sa.text(now_ms)),
    )


def check_isolation(level: object) -> str:
    """The isolation level, or :class:`DBOSConfigError` naming ``isolation_level``."""
    if level not in ISOLATION_LEVELS:
        raise DBOSConfigError(
            "isolation_level", f"must be one of {', '.join(ISOLATION_LEVELS)}, not {level!r}"
        )
    return str(level)


def step_options(func: Callable[..., Any], options: DatasourceOptions | None) -> tuple[str, str]:
    """``(name, isolation level)`` of one call: the function's name and SERIALIZABLE unless
    the options say otherwise (as DBOS)."""
    options = options or {}
    name = options.get("name") or function_name(func)
    return name, check_isolation(options.get("isolation_level") or "SERIALIZABLE")


def check_settings(schema: object, serializer: object) -> None:
    """Raise :class:`DBOSConfigError` naming the argument that cannot work (before any
    engine is made, so a refused datasource leaves no connection behind)."""
    if schema is not None and (not isinstance(schema, str) or not schema):
        raise DBOSConfigError("schema", f"must be a non-empty string, not {schema!r}")
    if serializer is not None and not isinstance(serializer, Serializer):
        raise DBOSConfigError(
            "serializer", f"must be a spindle.Serializer, not {type(serializer).__name__}"
        )


class DatasourceBase:
    """What the sync and async datasources share: settings, the table and its codec."""

    def __init__(
        self,
        *,
        dialect: str,
        schema: str | None,
        serializer: Serializer | None,
    ) -> None:
        self.sqlite = dialect == "sqlite"
        #: The schema of ``datasource_outputs`` (None on SQLite, which has none).
        self.schema: str | None = None if self.sqlite else (schema or DEFAULT_SCHEMA)
        #: Writes the recorded outputs and errors (pickle unless given, as DBOS 2.30).
        self.serializer: Serializer = serializer or DefaultSerializer()
        self.outputs = outputs_table(self.schema, sqlite=self.sqlite)
        #: Counts and logs the transient failures its transactions retry.
        self.retrier = Retrier(
            "datasource",
            is_closing=lambda: False,
            closed=lambda exc: exc,
        )

    def _create_ddl(self) -> list[sa.schema.ExecutableDDLElement]:
        ddl: list[sa.schema.ExecutableDDLElement] = []
        if self.schema is not None:
            ddl.append(sa.schema.CreateSchema(self.schema, if_not_exists=True))
        ddl.append(sa.schema.CreateTable(self.outputs, if_not_exists=True))
        return ddl

    def _checkpoint(self, name: str, key: tuple[str, int] | None) -> Checkpoint | None:
        if key is None:
            return None
        wf_id, fid = key

        def values(value: Any) -> dict[str, Any]:
            try:
                output = self.serializer.serialize(value)
            except Exception as exc:
                raise DBOSException(
                    f"cannot serialize the output of transaction {name!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            return {
                "workflow_id": wf_id,
                "step_id": fid,
                "output": output,
                "serialization": self.serializer.name(),
            }

        return (self.outputs, values)

    def _error_row(self, workflow_id: str, step_id: int, error: BaseException) -> Any:
        data, fmt = self._encode_error(error)
        return self.outputs.insert().values(
            workflow_id=workflow_id, step_id=step_id, error=data, serialization=fmt
        )

    def _encode_error(self, error: BaseException) -> tuple[str, str]:
        # An error the serializer cannot write (or read back as an exception) is kept as
        # its text in a DBOSException, pickled: the row still says what failed.
        serializer = self.serializer
        try:
            data = serializer.serialize(error)
            if isinstance(serializer.deserialize(data), BaseException):
                return data, serializer.name()
        except Exception:
            pass
        fallback = DefaultSerializer()
        text = DBOSException(f"{type(error).__name__}: {error}")
        return fallback.serialize(text), fallback.name()

    def _lookup_query(self, workflow_id: str, step_id: int) -> Any:
        t = self.outputs
        return sa.select(t.c.output, t.c.error, t.c.serialization).where(
            t.c.workflow_id == workflow_id, t.c.step_id == step_id
        )

    def _decode(self, row: Any) -> Done | None:
        if row is None:
            return None
        output, error, fmt = row
        serializer = self._reader(fmt)
        if error is not None:
            exc = serializer.deserialize(error)
            return Done(None, exc if isinstance(exc, BaseException) else DBOSException(repr(exc)))
        return Done(None if output is None else serializer.deserialize(output), None)

    def _reader(self, fmt: str | None) -> Serializer:
        if fmt is None or fmt == self.serializer.name():
            return self.serializer
        if fmt == PICKLE_FORMAT:
            return DefaultSerializer()
        raise DBOSException(
            f"a datasource output was written by serializer {fmt!r}; this datasource's is "
            f"{self.serializer.name()!r}"
        )


class SQLAlchemyDatasource(DatasourceBase):
    """A SQLAlchemy engine whose transactions run exactly once inside DBOS workflows."""

    def __init__(
        self,
        *,
        database_url: str,
        engine_kwargs: dict[str, Any],
        engine: sa.Engine | None,
        schema: str | None,
        serializer: Serializer | None,
    ) -> None:
        check_settings(schema, serializer)
        if engine is None:
            if not isinstance(database_url, str) or not database_url:
                raise DBOSConfigError("database_url", f"must be a URL, not {database_url!r}")
            engine = sa.create_engine(sync_url(database_url), **engine_kwargs)
        elif not isinstance(engine, sa.Engine):
            raise DBOSConfigError("engine", f"must be a sqlalchemy Engine, not {engine!r}")
        super().__init__(dialect=engine.dialect.name, schema=schema, serializer=serializer)
        #: The application database's engine (the one given, or made from the URL).
        self.engine: sa.Engine = engine
        self._session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
            "spindle_datasource_session", default=None
        )

    @staticmethod
    def create(
        database_url: str,
        engine_kwargs: dict[str, Any] | None = None,
        engine: sa.Engine | None = None,
        schema: str | None = None,
        serializer: Serializer | None = None,
    ) -> SQLAlchemyDatasource:
        """A datasource on ``database_url`` (or ``engine``), its table created."""
        ds = SQLAlchemyDatasource(
            database_url=database_url,
            engine_kwargs=dict(engine_kwargs or {}),
            engine=engine,
            schema=schema,
            serializer=serializer,
        )
        ds.run_migrations()
        return ds

    def run_migrations(self) -> None:
        """Create the schema (PostgreSQL) and ``datasource_outputs`` if missing."""
        with self.engine.begin() as conn:
            for ddl in self._create_ddl():
                conn.execute(ddl)

    def sql_session(self) -> Session:
        """The session of the transaction running now (inside ``transaction``/``run_tx_step``)."""
        session = self._session.get()
        if session is None:
            raise DBOSException("sql_session() must be called within a sync datasource transaction")
        return session

    @overload
    def transaction(
        self, func: F, *, name: str | None = None, isolation_level: IsolationLevel = ...
    ) -> F: ...

    @overload
    def transaction(
        self,
        func: None = None,
        *,
        name: str | None = None,
        isolation_level: IsolationLevel = ...,
    ) -> Callable[[F], F]: ...

    def transaction(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        isolation_level: IsolationLevel = "SERIALIZABLE",
    ) -> Any:
        """Decorate a function to run as this datasource's transaction (``@ds.transaction``
        or ``@ds.transaction(name=..., isolation_level=...)``)."""
        check_isolation(isolation_level)

        def decorator(fn: F) -> F:
            if is_async(fn):
                raise DBOSException(
                    f"{function_name(fn)} is a coroutine function: use an "
                    "AsyncSQLAlchemyDatasource for async transactions"
                )
            options: DatasourceOptions = {
                "name": name or function_name(fn),
                "isolation_level": isolation_level,
            }

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.run_tx_step(options, fn, *args, **kwargs)

            return cast(F, wrapper)

        return decorator(func) if func is not None else decorator

    def run_tx_step(
        self,
        ds_options: DatasourceOptions | None,
        func: Callable[P, R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``func(*args, **kwargs)`` as a transaction: in a workflow exactly once (its
        recorded outcome on a replay), outside one just in a transaction."""
        name, isolation = step_options(func, ds_options)
        op = transactional(_current.peek(), _Store(self), name, Call(func, args, kwargs), isolation)
        return cast(R, drive(op))


class _Store:
    """The sync datasource as the transactional operation's store."""

    __slots__ = ("ds",)

    def __init__(self, ds: SQLAlchemyDatasource) -> None:
        self.ds = ds

    @property
    def retrier(self) -> Retrier:
        return self.ds.retrier

    def transact(
        self, call: Call, name: str, key: tuple[str, int] | None, isolation: str | None
    ) -> Effect:
        ds = self.ds
        engine = isolated(ds.engine, isolation, sqlite=ds.sqlite)
        checkpoint = ds._checkpoint(name, key)
        # The engine is the app's: pysqlite may control its transactions (see JoinMode).
        return Thunk(lambda: run_sync(engine, call, ds._session, checkpoint, "rollback_only"))

    def lookup(self, workflow_id: str, function_id: int) -> Effect:
        def read() -> Done | None:
            with self.ds.engine.connect() as conn:
                query = self.ds._lookup_query(workflow_id, function_id)
                return self.ds._decode(conn.execute(query).one_or_none())

        return Thunk(read)

    def record_error(self, workflow_id: str, function_id: int, error: BaseException) -> Effect:
        def write() -> None:
            try:
                with self.ds.engine.begin() as conn:
                    conn.execute(self.ds._error_row(workflow_id, function_id, error))
            except IntegrityError as exc:
                raise AlreadyRecorded() from exc

        return Thunk(write)


def sync_url(url: str) -> str:
    """A PostgreSQL URL without a driver gets psycopg 3, the driver installed with Spindle."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
