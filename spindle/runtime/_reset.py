"""DBOS's ``DBOS.reset_system_database``: empty (``truncate=True``) or destroy the system
database, for tests. Refused while a runtime is launched on it: its threads would write
into a database being taken away."""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ._db_retry import retried
from ._errors import DBOSException
from ._schema import SCHEMA, metadata, schema_version
from ._sysdb import SystemDatabase
from ._sysdb_engine import is_sqlite, normalize_url


@retried
def _truncate(sysdb: SystemDatabase) -> None:
    """Delete every row of every Spindle table but the schema version, in one transaction
    (children first: the foreign keys would refuse the other order)."""
    with sysdb.transaction() as conn:
        schema = None if sysdb.sqlite else SCHEMA
        present = set(sa.inspect(conn).get_table_names(schema=schema))
        for table in reversed(metadata.sorted_tables):
            if table is not schema_version and table.name in present:
                conn.execute(table.delete())


def _drop(url: str) -> None:
    """Remove the database itself: SQLite's file (and its WAL and journal files), or the
    PostgreSQL database (its connections are ended first, as DBOS's reset does)."""
    u = make_url(normalize_url(url))
    if is_sqlite(url):
        path = u.database
        if path and path != ":memory:":
            for suffix in ("", "-wal", "-shm", "-journal"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
        return
    if not u.database:
        raise DBOSException("reset_system_database: the URL names no database")
    admin = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(u.database)
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        admin.dispose()


def reset_system_database(url: str, *, schema: str | None, truncate: bool) -> None:
    """Empty (``truncate``) or destroy the system database at ``url``; the next launch
    makes it again."""
    if schema not in (None, SCHEMA):
        raise DBOSException(f"schema={schema!r}: Spindle keeps its tables in {SCHEMA!r}")
    if not truncate:
        _drop(url)
        return
    if is_sqlite(url):
        path = make_url(normalize_url(url)).database
        if path and path != ":memory:" and not os.path.exists(path):
            return  # nothing to empty (and opening it would create the file)
    sysdb = SystemDatabase(url, pool_size=1, max_connections=1)
    try:
        _truncate(sysdb)
    finally:
        sysdb.close()
