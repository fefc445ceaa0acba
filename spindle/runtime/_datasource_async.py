"""``AsyncSQLAlchemyDatasource``: the datasource over SQLAlchemy's asyncio engine (psycopg's
async driver on PostgreSQL, aiosqlite on SQLite), on the same operation and table as the
sync one (:mod:`._datasource`)."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, cast, overload

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from . import _current
from ._datasource import (
    DatasourceBase,
    DatasourceOptions,
    IsolationLevel,
    check_isolation,
    check_settings,
    step_options,
)
from ._db_retry import Retrier
from ._durable import Call, Effect, drive_async
from ._errors import DBOSConfigError, DBOSException
from ._functions import function_name, is_async
from ._serializer import Serializer
from ._sql_tx import AlreadyRecorded, isolated, run_async
from ._tx_op import Done, Thunk, transactional

__all__ = ["AsyncSQLAlchemyDatasource"]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


class AsyncSQLAlchemyDatasource(DatasourceBase):
    """An asyncio SQLAlchemy engine whose transactions run exactly once inside workflows."""

    def __init__(
        self,
        *,
        database_url: str,
        engine_kwargs: dict[str, Any],
        engine: AsyncEngine | None,
        schema: str | None,
        serializer: Serializer | None,
    ) -> None:
        check_settings(schema, serializer)
        if engine is None:
            if not isinstance(database_url, str) or not database_url:
                raise DBOSConfigError("database_url", f"must be a URL, not {database_url!r}")
            engine = create_async_engine(async_url(database_url), **engine_kwargs)
        elif not isinstance(engine, AsyncEngine):
            raise DBOSConfigError("engine", f"must be a sqlalchemy AsyncEngine, not {engine!r}")
        super().__init__(dialect=engine.dialect.name, schema=schema, serializer=serializer)
        #: The application database's asyncio engine (the one given, or made from the URL).
        self.engine: AsyncEngine = engine
        self._session: contextvars.ContextVar[AsyncSession | None] = contextvars.ContextVar(
            "spindle_async_datasource_session", default=None
        )

    @staticmethod
    async def create(
        database_url: str,
        engine_kwargs: dict[str, Any] | None = None,
        engine: AsyncEngine | None = None,
        schema: str | None = None,
        serializer: Serializer | None = None,
    ) -> AsyncSQLAlchemyDatasource:
        """A datasource on ``database_url`` (or ``engine``), its table created (awaited, as
        DBOS's)."""
        ds = AsyncSQLAlchemyDatasource(
            database_url=database_url,
            engine_kwargs=dict(engine_kwargs or {}),
            engine=engine,
            schema=schema,
            serializer=serializer,
        )
        await ds.run_migrations()
        return ds

    async def run_migrations(self) -> None:
        """Create the schema (PostgreSQL) and ``datasource_outputs`` if missing."""
        async with self.engine.begin() as conn:
            for ddl in self._create_ddl():
                await conn.execute(ddl)

    def sql_session(self) -> AsyncSession:
        """The session of the transaction running now (inside ``transaction``/
        ``run_tx_step_async``)."""
        session = self._session.get()
        if session is None:
            raise DBOSException(
                "sql_session() must be called within an async datasource transaction"
            )
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
        """Decorate a coroutine function to run as this datasource's transaction."""
        check_isolation(isolation_level)

        def decorator(fn: F) -> F:
            if not is_async(fn):
                raise DBOSException(
                    f"{function_name(fn)} is not a coroutine function: use a "
                    "SQLAlchemyDatasource for sync transactions"
                )
            options: DatasourceOptions = {
                "name": name or function_name(fn),
                "isolation_level": isolation_level,
            }

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.run_tx_step_async(options, fn, *args, **kwargs)

            return cast(F, wrapper)

        return decorator(func) if func is not None else decorator

    async def run_tx_step_async(
        self,
        ds_options: DatasourceOptions | None,
        func: Callable[P, Coroutine[Any, Any, R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Await ``func(*args, **kwargs)`` as a transaction: in a workflow exactly once (its
        recorded outcome on a replay), outside one just in a transaction."""
        if not is_async(func):
            raise DBOSException(f"{function_name(func)} is not a coroutine function")
        name, isolation = step_options(func, ds_options)
        op = transactional(
            _current.peek(),
            _AsyncStore(self),
            name,
            Call(func, args, kwargs),
            isolation,
        )
        return cast(R, await drive_async(op))


class _AsyncStore:
    """The async datasource as the transactional operation's store."""

    __slots__ = ("ds",)

    def __init__(self, ds: AsyncSQLAlchemyDatasource) -> None:
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
        return Thunk(
            async_=lambda: run_async(engine, call, ds._session, checkpoint, "rollback_only")
        )

    def lookup(self, workflow_id: str, function_id: int) -> Effect:
        async def read() -> Done | None:
            async with self.ds.engine.connect() as conn:
                result = await conn.execute(self.ds._lookup_query(workflow_id, function_id))
                return self.ds._decode(result.one_or_none())

        return Thunk(async_=read)

    def record_error(self, workflow_id: str, function_id: int, error: BaseException) -> Effect:
        async def write() -> None:
            try:
                async with self.ds.engine.begin() as conn:
                    await conn.execute(self.ds._error_row(workflow_id, function_id, error))
            except IntegrityError as exc:
                raise AlreadyRecorded() from exc

        return Thunk(async_=write)


def async_url(url: str) -> str:
    """The asyncio driver for a URL without one: psycopg (async) or aiosqlite."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url
