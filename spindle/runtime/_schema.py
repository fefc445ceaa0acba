"""The system database schema, one for SQLite and PostgreSQL, with forward migrations."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: On PostgreSQL the tables live in this schema; SQLite has none (translated to None).
SCHEMA = "dbos"
#: PostgreSQL: the sequence that numbers enqueues (``workflow_status.enqueue_seq``).
ENQUEUE_SEQUENCE = "workflow_enqueue_seq"

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
    sa.Column("queue_partition_key", sa.Text, nullable=True),
    # PostgreSQL: the order of enqueues, from a sequence, for FIFO among workflows enqueued
    # in the same millisecond (SQLite uses its rowid). NULL for rows written otherwise.
    sa.Column("enqueue_seq", sa.BigInteger, nullable=True),
)
sa.Index("idx_ws_status_executor", workflow_status.c.status, workflow_status.c.executor_id)
sa.Index("idx_ws_created_at", workflow_status.c.created_at)
# Partial: most workflows are neither children nor queued, and an index a row is not in
# costs its insert no WAL page (the hot path's commits are what bound throughput). A query
# `col = :x` implies `col IS NOT NULL`, so both planners still use them.
_not_null_parent = workflow_status.c.parent_workflow_id.isnot(None)
_not_null_queue = workflow_status.c.queue_name.isnot(None)
sa.Index(
    "idx_ws_parent",
    workflow_status.c.parent_workflow_id,
    sqlite_where=_not_null_parent,
    postgresql_where=_not_null_parent,
)
sa.Index(
    "idx_ws_queue_status",
    workflow_status.c.queue_name,
    workflow_status.c.status,
    sqlite_where=_not_null_queue,
    postgresql_where=_not_null_queue,
)

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

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column(
        "destination_uuid",
        sa.Text,
        sa.ForeignKey(
            f"{SCHEMA}.workflow_status.workflow_uuid", onupdate="CASCADE", ondelete="CASCADE"
        ),
        nullable=False,
    ),
    sa.Column("topic", sa.Text, nullable=True),
    sa.Column("message", sa.LargeBinary, nullable=False),
    sa.Column("created_at_epoch_ms", sa.BigInteger, nullable=False),
    # Time-ordered (UUIDv7-style) when Spindle writes it, so it breaks created_at ties FIFO.
    sa.Column("message_uuid", sa.Text, primary_key=True),
)
sa.Index(
    "idx_notifications_dest_topic",
    notifications.c.destination_uuid,
    notifications.c.topic,
    notifications.c.created_at_epoch_ms,
)

workflow_events = sa.Table(
    "workflow_events",
    metadata,
    sa.Column(
        "workflow_uuid",
        sa.Text,
        sa.ForeignKey(
            f"{SCHEMA}.workflow_status.workflow_uuid", onupdate="CASCADE", ondelete="CASCADE"
        ),
        primary_key=True,
    ),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
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


def _v3_schedules(conn: Connection) -> None:
    workflow_schedules.create(conn, checkfirst=True)


#: NOTIFY channels of the PostgreSQL triggers (names as DBOS Transact uses them). The payload
#: is a JSON array [workflow id, topic or key], so an ID containing any separator is safe.
NOTIFICATIONS_CHANNEL = "dbos_notifications_channel"
WORKFLOW_EVENTS_CHANNEL = "dbos_workflow_events_channel"

_PG_TRIGGERS = tuple(
    f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.{table}_function() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('{channel}', json_build_array(NEW.{id_col}, NEW.{sub_col})::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS dbos_{table}_trigger ON {SCHEMA}.{table};
CREATE TRIGGER dbos_{table}_trigger AFTER {events} ON {SCHEMA}.{table}
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.{table}_function();
"""
    for table, channel, id_col, sub_col, events in (
        ("notifications", NOTIFICATIONS_CHANNEL, "destination_uuid", "topic", "INSERT"),
        ("workflow_events", WORKFLOW_EVENTS_CHANNEL, "workflow_uuid", "key", "INSERT OR UPDATE"),
    )
)


def _v2_messaging(conn: Connection) -> None:
    """send/recv and events: two tables and, on PostgreSQL, the NOTIFY triggers.

    Triggers rather than a pg_notify in Spindle's own transaction: a row inserted by any
    writer (another process, a DBOS client, psql) wakes the waiters all the same.
    """
    for table in (notifications, workflow_events):
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        for script in _PG_TRIGGERS:
            # One driver call per script: psycopg runs a parameterless multi-statement
            # string with the simple query protocol.
            conn.exec_driver_sql(script)


def _v4_queues(conn: Connection) -> None:
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
        f"ON {prefix}workflow_status (queue_name, started_at_epoch_ms) "
        "WHERE queue_name IS NOT NULL"
    )


def _v5_partitions(conn: Connection) -> None:
    """Partitioned queues: a workflow's partition key, and the partitions of a queue that
    hold queued work; on PostgreSQL, the enqueue sequence that keeps same-millisecond
    enqueues FIFO. ``_v1`` creates the table from the metadata, which now has the
    columns: a database made fresh has them already, an older one gets them here."""
    sqlite = conn.dialect.name == "sqlite"
    prefix = "" if sqlite else f"{SCHEMA}."
    schema = None if sqlite else SCHEMA
    columns = {c["name"] for c in sa.inspect(conn).get_columns("workflow_status", schema=schema)}
    for column, kind in (("queue_partition_key", "TEXT"), ("enqueue_seq", "BIGINT")):
        if column not in columns:
            conn.exec_driver_sql(f"ALTER TABLE {prefix}workflow_status ADD COLUMN {column} {kind}")
    if not sqlite:
        conn.exec_driver_sql(f"CREATE SEQUENCE IF NOT EXISTS {prefix}{ENQUEUE_SEQUENCE}")
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS idx_ws_queue_partition "
        f"ON {prefix}workflow_status (queue_name, queue_partition_key, status) "
        "WHERE queue_partition_key IS NOT NULL"
    )


#: Forward migrations, applied in order; entry i brings the schema to version i + 1.
#: Never edit a released entry: append a new one.
#: ``_v4_queues`` comes last: it was written as version 3 on the queue branch, but the
#: schedules migration landed first as version 3, and a released entry never moves.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1,
    _v2_messaging,
    _v3_schedules,
    _v4_queues,
    _v5_partitions,
]

LATEST_VERSION = len(MIGRATIONS)
