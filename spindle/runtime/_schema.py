"""The system database schema, one for SQLite and PostgreSQL: the one declaration of every
table's columns.

Row types (:mod:`._rows`), the hot path's inserts (:mod:`._sysdb_hot`) and the migrations
(:mod:`._migrations`) name columns of these tables and are checked against them.
"""

from __future__ import annotations

import sqlalchemy as sa

#: On PostgreSQL the tables live in this schema; SQLite has none (translated to None).
SCHEMA = "dbos"
#: PostgreSQL: the sequence that numbers enqueues (``workflow_status.enqueue_seq``).
ENQUEUE_SEQUENCE = "workflow_enqueue_seq"

metadata = sa.MetaData(schema=SCHEMA)

#: DBOS's identity columns of ``workflow_status`` (see ``_identity_columns``).
IDENTITY_COLUMNS = (
    "class_name",
    "config_name",
    "authenticated_user",
    "assumed_role",
    "authenticated_roles",
)

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
    # DBOS's ``forked_from``: the workflow this one was forked from (fork_workflow).
    sa.Column("forked_from", sa.Text, nullable=True),
    # DBOS's delayed enqueue: a DELAYED workflow becomes ENQUEUED at this time.
    sa.Column("delay_until_epoch_ms", sa.BigInteger, nullable=True),
    # DBOS's workflow attributes, as JSON text (SetWorkflowAttributes).
    sa.Column("attributes", sa.Text, nullable=True),
    # DBOS's identity columns: the class and config name of a method's self/cls, and the
    # user, assumed role and roles (JSON list) it was started as. Written by the creating
    # insert, so a listing that does not load inputs still shows them.
    *(sa.Column(name, sa.Text, nullable=True) for name in IDENTITY_COLUMNS),
    # The format of inputs, output and error (NULL: native pickle); see _serialization.
    sa.Column("serialization", sa.Text, nullable=True),
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
# In the dequeue's order after the queue and status: a dequeue reads its first rows in
# order and stops, whatever the table holds. With (queue_name, status) alone, PostgreSQL's
# planner walked idx_ws_created_at through every finished workflow older than the queued
# ones instead (8 ms per dequeue at 10,000 rows; 1 ms with this). SQLite's rowid, its
# same-millisecond order, is the last column of every index there.
sa.Index(
    "idx_ws_queue_order",
    workflow_status.c.queue_name,
    workflow_status.c.status,
    workflow_status.c.created_at,
    workflow_status.c.enqueue_seq,
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
    # When the operation began (DBOS's started_at_epoch_ms); NULL for a one-statement write,
    # which began when it committed.
    sa.Column("started_at_epoch_ms", sa.BigInteger, nullable=True),
    sa.Column("serialization", sa.Text, nullable=True),
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
    sa.Column("serialization", sa.Text, nullable=True),
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
    sa.Column("serialization", sa.Text, nullable=True),
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
    sa.Column("serialization", sa.Text, nullable=True),
)

#: DBOS's application versions: each version that launched on this database; the one with
#: the greatest ``version_timestamp`` is the latest (``set_latest_application_version``).
application_versions = sa.Table(
    "application_versions",
    metadata,
    sa.Column("version_id", sa.Text, primary_key=True),
    sa.Column("version_name", sa.Text, nullable=False, unique=True),
    sa.Column("version_timestamp", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("application_name", sa.Text, nullable=True),
)

#: DBOS's streams: the values a workflow wrote under ``key``, numbered from 0 by ``offset``
#: (a closed stream ends with DBOS's sentinel value). Deleted with their workflow.
streams = sa.Table(
    "streams",
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
    sa.Column("offset", sa.Integer, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    # The step that wrote it (None for a write from inside a step, as DBOS).
    sa.Column("function_id", sa.Integer, nullable=True),
    sa.Column("serialization", sa.Text, nullable=True),
)

#: Exact workflow counts by status, kept by triggers (see :mod:`._status_counts`): a
#: status's count is the sum of its rows (PostgreSQL: one row per status per backend).
workflow_status_counts = sa.Table(
    "workflow_status_counts",
    metadata,
    sa.Column("status", sa.Text, primary_key=True),
    sa.Column("slot", sa.BigInteger, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

schema_version = sa.Table(
    "spindle_schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


#: NOTIFY channels of the PostgreSQL triggers (names as DBOS Transact uses them). The payload
#: is a JSON array [workflow id, topic or key], so an ID containing any separator is safe.
NOTIFICATIONS_CHANNEL = "dbos_notifications_channel"
WORKFLOW_EVENTS_CHANNEL = "dbos_workflow_events_channel"
STREAMS_CHANNEL = "dbos_streams_channel"
