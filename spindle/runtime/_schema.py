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


def _v3_queues(conn: Connection) -> None:
    """Queues: deduplication IDs unique per queue while their workflow is ENQUEUED or PENDING
    (a finished workflow frees its ID without a write), and started_at by queue for the rate
    limiter. Raw DDL, not table metadata: ``_v1`` creates ``table.indexes`` and must not
    change meaning. ``IF NOT EXISTS`` keeps it independent of the other migrations' order."""
    prefix = "" if conn.dialect.name == "sqlite" else f"{SCHEMA}."
    conn.exec_driver_sql(
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_ws_queue_dedup "
        f"ON {prefix}workflow_status (queue_name, deduplication_id) "
        "WHERE deduplication_id IS NOT NULL AND status IN ('ENQUEUED', 'PENDING')"
    )
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS idx_ws_queue_started "
        f"ON {prefix}workflow_status (queue_name, started_at_epoch_ms)"
    )


#: Forward migrations, applied in order; entry i brings the schema to version i + 1.
#: Never edit a released entry: append a new one.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v3_queues]

LATEST_VERSION = len(MIGRATIONS)
