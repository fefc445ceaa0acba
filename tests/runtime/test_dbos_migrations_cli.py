"""``run_dbos_database_migrations`` on both backends: the schema is created ahead of a
deploy (the app's launch then has nothing to do), and on PostgreSQL an application role
is granted the use of the ``dbos`` schema."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from spindle import DBOSException, run_dbos_database_migrations
from spindle.runtime._migrations import LATEST_VERSION
from spindle.runtime._schema import schema_version
from spindle.runtime._sysdb_engine import make_engine
from tests.conftest import _pg_admin


def _version(url: str) -> int:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(schema_version.c.version)).scalar_one())
    finally:
        engine.dispose()


def test_migrations_ahead_of_launch(db_url: str, app_db_url: str) -> None:
    run_dbos_database_migrations(db_url, app_database_url=app_db_url)
    assert _version(db_url) == LATEST_VERSION
    run_dbos_database_migrations(db_url)  # idempotent
    assert _version(db_url) == LATEST_VERSION
    with pytest.raises(DBOSException, match="keeps its tables in 'dbos'"):
        run_dbos_database_migrations(db_url, schema="other")
    with pytest.raises(DBOSException, match="is not a role name"):
        run_dbos_database_migrations(db_url, application_role="x; DROP TABLE y")
    if db_url.startswith("sqlite"):
        with pytest.raises(DBOSException, match="needs PostgreSQL"):
            run_dbos_database_migrations(db_url, application_role="app")
        return
    role = f"spindle_role_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{role}"')
        run_dbos_database_migrations(db_url, application_role=role)
        engine = make_engine(db_url, pool_size=1)
        try:
            with engine.connect() as conn:
                granted = conn.execute(
                    sa.text(
                        "SELECT has_schema_privilege(:r, 'dbos', 'USAGE'),"
                        " has_table_privilege(:r, 'dbos.workflow_status', 'INSERT')"
                    ),
                    {"r": role},
                ).one()
                assert tuple(granted) == (True, True)
                # The grants are dropped with the test's database; then the role can go.
                conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
                conn.commit()
        finally:
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()
