"""The system database schema, one for SQLite and PostgreSQL, with forward migrations."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: On PostgreSQL the tables live in this schema; SQLite has none (translated to None).
SCHEMA = "dbos"

metadata = sa.MetaData(schema=SCHEMA)

workflow_status = sa.Table(
    "workflow_status",
    metadata,
    sa.Column("workflow_uuid", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("inputs", sa.LargeBinary, nullable=True),
    sa.Column("output", sa.LargeBinary, nullable=True),
    sa.Column("error", sa.LargeBinary, nullable=True),
    sa.Column("executor_id", sa.Text, nullable=False),
    sa.Column("application_version", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("recovery_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("parent_workflow_id", sa.Text, nullable=True),
    sa.Column("workflow_timeout_ms", sa.BigInteger, nullable=True),
    sa.Column("workflow_deadline_epoch_ms", sa.BigInteger, nullable=True),
    sa.Column("queue_name", sa.Text, nullable=True),
    sa.Column("deduplication_id", sa.Text, nullable=True),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at_epoch_ms", sa.BigInteger, nullable=True),
)
sa.Index("idx_ws_status_executor", workflow_status.c.status, workflow_status.c.executor_id)
sa.Index("idx_ws_created_at", workflow_status.c.created_at)
sa.Index("idx_ws_parent", workflow_status.c.parent_workflow_id)
sa.Index("idx_ws_queue_status", workflow_status.c.queue_name, workflow_status.c.status)

operation_outputs = sa.Table(
    "operation_outputs",
    metadata,
    sa.Column("workflow_uuid", sa.Text, primary_key=True),
    sa.Column("function_id", sa.Integer, primary_key=True),
    sa.Column("function_name", sa.Text, nullable=False),
    sa.Column("output", sa.LargeBinary, nullable=True),
    sa.Column("error", sa.LargeBinary, nullable=True),
    sa.Column("child_workflow_id", sa.Text, nullable=True),
    sa.Column("completed_at", sa.BigInteger, nullable=False),
)

#: Dynamic schedules (DBOS 3.x ``create_schedule``): one row per named cron schedule.
workflow_schedules = sa.Table(
    "workflow_schedules",
    metadata,
    sa.Column("schedule_id", sa.Text, primary_key=True),
    sa.Column("schedule_name", sa.Text, nullable=False, unique=True),
    sa.Column("workflow_name", sa.Text, nullable=False),
    sa.Column("schedule", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="ACTIVE"),
    sa.Column("context", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

schema_version = sa.Table(
    "spindle_schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


def _v1(conn: Connection) -> None:
    for table in (workflow_status, operation_outputs):
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _v4_schedules(conn: Connection) -> None:
    workflow_schedules.create(conn, checkfirst=True)


#: Forward migrations, applied in order; entry i brings the schema to version i + 1.
#: Never edit a released entry: append a new one.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v4_schedules]

LATEST_VERSION = len(MIGRATIONS)
