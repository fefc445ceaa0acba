"""DBOS's ``run_dbos_database_migrations``: create or bring forward the system database
(and the application database's checkpoint table) ahead of a deploy, and optionally let
a less privileged application role use them, so the app itself can run without DDL rights.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from ._appdb import ApplicationDatabase
from ._errors import DBOSException
from ._schema import SCHEMA
from ._sysdb import SystemDatabase

_ROLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def _grant(engine: sa.Engine, role: str) -> None:
    # The role is an identifier, not a value: checked, then quoted.
    who = f'"{role}"'
    with engine.begin() as conn:
        for statement in (
            f"GRANT USAGE ON SCHEMA {SCHEMA} TO {who}",
            f"GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA {SCHEMA} TO {who}",
            f"GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO {who}",
            f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {SCHEMA} TO {who}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT ALL ON TABLES TO {who}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT ALL ON SEQUENCES TO {who}",
        ):
            conn.exec_driver_sql(statement)


def run_dbos_database_migrations(
    system_database_url: str,
    *,
    app_database_url: str | None = None,
    schema: str = "dbos",
    application_role: str | None = None,
) -> None:
    """Migrate the system database (and the application database, when given) to this
    version's schema; with ``application_role`` (PostgreSQL), grant that role the use of
    the ``dbos`` schema's tables, sequences and trigger functions."""
    if schema != SCHEMA:
        raise DBOSException(f"schema={schema!r}: Spindle keeps its tables in {SCHEMA!r}")
    if application_role is not None and not _ROLE.match(application_role):
        raise DBOSException(f"application_role={application_role!r} is not a role name")
    sysdb = SystemDatabase(system_database_url, pool_size=1, max_connections=1)
    try:
        if application_role is not None and sysdb.sqlite:
            raise DBOSException("application_role needs PostgreSQL (SQLite has no roles)")
        sysdb.migrate()
        if application_role is not None:
            _grant(sysdb.engine, application_role)
    finally:
        sysdb.close()
    if app_database_url is not None:
        appdb = ApplicationDatabase(app_database_url, pool_size=1)
        try:
            appdb.migrate()
            if application_role is not None and not appdb.sqlite:
                _grant(appdb.engine, application_role)
        finally:
            appdb.close()
