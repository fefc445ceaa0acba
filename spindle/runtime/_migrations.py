"""Forward migrations of the system database schema, and the one call that applies them."""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._errors import DBOSNotLaunchedError
from ._schema import (
    ENQUEUE_SEQUENCE,
    IDENTITY_COLUMNS,
    NOTIFICATIONS_CHANNEL,
    SCHEMA,
    STREAMS_CHANNEL,
    WORKFLOW_EVENTS_CHANNEL,
    application_versions,
    notifications,
    operation_outputs,
    schema_version,
    streams,
    workflow_events,
    workflow_schedules,
    workflow_status,
)

_log = logging.getLogger("spindle")


def _v1(conn: Connection) -> None:
    for table in (workflow_status, operation_outputs):
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _v3_schedules(conn: Connection) -> None:
    workflow_schedules.create(conn, checkfirst=True)


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


def _v6_forks_and_delays(conn: Connection) -> None:
    """DBOS's ``forked_from`` (the workflow a fork was copied from) and
    ``delay_until_epoch_ms`` (when a DELAYED workflow enters its queue): ``_v1`` makes a
    fresh table with them already, an older one gets them here; likewise ``attributes``
    (JSON text). And DBOS's ``application_versions`` table."""
    sqlite = conn.dialect.name == "sqlite"
    prefix = "" if sqlite else f"{SCHEMA}."
    schema = None if sqlite else SCHEMA
    columns = {c["name"] for c in sa.inspect(conn).get_columns("workflow_status", schema=schema)}
    for column, kind in (
        ("forked_from", "TEXT"),
        ("delay_until_epoch_ms", "BIGINT"),
        ("attributes", "TEXT"),
    ):
        if column not in columns:
            conn.exec_driver_sql(f"ALTER TABLE {prefix}workflow_status ADD COLUMN {column} {kind}")
    application_versions.create(conn, checkfirst=True)


_PG_STREAMS_TRIGGER = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.streams_function() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('{STREAMS_CHANNEL}', json_build_array(NEW.workflow_uuid, NEW.key)::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS dbos_streams_trigger ON {SCHEMA}.streams;
CREATE TRIGGER dbos_streams_trigger AFTER INSERT ON {SCHEMA}.streams
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.streams_function();
"""


def _v7_streams(conn: Connection) -> None:
    """DBOS's streams; on PostgreSQL a trigger NOTIFYs each value written (by any process),
    so readers wake at once instead of polling."""
    streams.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_PG_STREAMS_TRIGGER)


_HOLDING = ("DELAYED", "ENQUEUED", "PENDING")


def _release_duplicate_dedup_ids(conn: Connection) -> None:
    """Before v8 a DELAYED row did not hold its deduplication ID, so a database may have a
    DELAYED row sharing its (queue, deduplication ID) with a live row or with another
    DELAYED row; the v8 index cannot be built over them. One row per key keeps the ID:
    the ENQUEUED/PENDING one (it held it under the old index, so callers were already
    deduplicated against it), else the oldest DELAYED one. The others keep running with
    their ID cleared: no workflow is lost, only its deduplication, and each is logged."""
    ws = workflow_status
    rows = conn.execute(
        sa.select(ws.c.workflow_uuid, ws.c.queue_name, ws.c.deduplication_id, ws.c.status)
        .where(ws.c.deduplication_id.is_not(None), ws.c.status.in_(_HOLDING))
        # Per key: live rows first, then the oldest DELAYED (workflow_uuid breaks ties).
        .order_by(
            ws.c.queue_name,
            ws.c.deduplication_id,
            sa.case((ws.c.status == "DELAYED", 1), else_=0),
            ws.c.created_at,
            ws.c.workflow_uuid,
        )
    ).all()
    keeper: dict[tuple[str | None, str], str] = {}
    for wf_id, queue_name, dedup_id, status in rows:
        kept = keeper.setdefault((queue_name, dedup_id), wf_id)
        if kept == wf_id:
            continue
        conn.execute(ws.update().where(ws.c.workflow_uuid == wf_id).values(deduplication_id=None))
        _log.warning(
            "migration v8: workflow %s (%s) shared deduplication ID %r on queue %r with "
            "workflow %s, which keeps it; its deduplication ID is cleared (it still runs)",
            wf_id,
            status,
            dedup_id,
            queue_name,
            kept,
        )


def _v8_delayed_dedup(conn: Connection) -> None:
    """A DELAYED workflow holds its deduplication ID too (as DBOS: the key is held until the
    workflow ends). Without it two DELAYED rows could share a key and their promotion to
    ENQUEUED would break the index; the debouncer relies on it to serialise first calls."""
    _release_duplicate_dedup_ids(conn)
    prefix = "" if conn.dialect.name == "sqlite" else f"{SCHEMA}."
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prefix}uq_ws_queue_dedup")
    conn.exec_driver_sql(
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_ws_queue_dedup_held "
        f"ON {prefix}workflow_status (queue_name, deduplication_id) "
        "WHERE deduplication_id IS NOT NULL AND status IN ('DELAYED', 'ENQUEUED', 'PENDING')"
    )


def _v9_step_started_at(conn: Connection) -> None:
    """DBOS's ``started_at_epoch_ms`` on recorded steps: when a step began, beside when it was
    recorded (``_v1`` makes a fresh table with it already)."""
    sqlite = conn.dialect.name == "sqlite"
    prefix = "" if sqlite else f"{SCHEMA}."
    schema = None if sqlite else SCHEMA
    columns = {c["name"] for c in sa.inspect(conn).get_columns("operation_outputs", schema=schema)}
    if "started_at_epoch_ms" not in columns:
        conn.exec_driver_sql(
            f"ALTER TABLE {prefix}operation_outputs ADD COLUMN started_at_epoch_ms BIGINT"
        )


def _v10_identity_columns(conn: Connection) -> None:
    """DBOS's ``class_name``, ``config_name``, ``authenticated_user``, ``assumed_role`` and
    ``authenticated_roles`` columns (``_v1`` makes a fresh table with them already). Rows
    written before keep them NULL: their status still reads them from the inputs."""
    sqlite = conn.dialect.name == "sqlite"
    prefix = "" if sqlite else f"{SCHEMA}."
    schema = None if sqlite else SCHEMA
    columns = {c["name"] for c in sa.inspect(conn).get_columns("workflow_status", schema=schema)}
    for column in IDENTITY_COLUMNS:
        if column not in columns:
            conn.exec_driver_sql(f"ALTER TABLE {prefix}workflow_status ADD COLUMN {column} TEXT")


#: The tables whose values carry their format (DBOS's ``serialization`` column).
_VALUE_TABLES = (
    "workflow_status",
    "operation_outputs",
    "notifications",
    "workflow_events",
    "streams",
    "workflow_schedules",
)


def _v11_serialization(conn: Connection) -> None:
    """Each value table records the format its values were written in (NULL: native
    pickle, as every row before this version), so a change of serializer leaves older rows
    readable. Self-contained: it looks at the columns it adds, whatever ran before it."""
    sqlite = conn.dialect.name == "sqlite"
    prefix = "" if sqlite else f"{SCHEMA}."
    schema = None if sqlite else SCHEMA
    inspector = sa.inspect(conn)
    for table in _VALUE_TABLES:
        columns = {c["name"] for c in inspector.get_columns(table, schema=schema)}
        if "serialization" not in columns:
            conn.exec_driver_sql(f"ALTER TABLE {prefix}{table} ADD COLUMN serialization TEXT")


def _v12_forked_index(conn: Connection) -> None:
    """Every listing asks which of its rows were forked (DBOS's ``was_forked_from``): a
    search of ``forked_from`` that walked every row without an index (120-210 ms per
    ``list_workflows``/``get_workflow_status`` at a million rows). Partial: a row that is
    not a fork is not in it, so the hot path's inserts write no entry."""
    prefix = "" if conn.dialect.name == "sqlite" else f"{SCHEMA}."
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS idx_ws_forked_from "
        f"ON {prefix}workflow_status (forked_from) WHERE forked_from IS NOT NULL"
    )


def _v13_queue_order_index(conn: Connection) -> None:
    """The dequeue's index in its order (see ``idx_ws_queue_order`` in :mod:`._schema`): it
    replaces ``idx_ws_queue_status``, its prefix, so every write still maintains one queue
    index. Building it reads the queued rows only (the index is partial)."""
    prefix = "" if conn.dialect.name == "sqlite" else f"{SCHEMA}."
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS idx_ws_queue_order ON "
        f"{prefix}workflow_status (queue_name, status, created_at, enqueue_seq)"
        " WHERE queue_name IS NOT NULL"
    )
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prefix}idx_ws_queue_status")


def _v14_started_index(conn: Connection) -> None:
    """``idx_ws_queue_started`` holds started workflows only: the rate limiter, its one
    reader, asks for starts after a time (which implies a start time on both planners).
    An enqueue writes no entry into it, one of the five a queued insert wrote; and the
    dequeue, which names no start time, can no longer be planned on it (with statistics
    that saw no ENQUEUED row PostgreSQL took it and sorted the backlog)."""
    prefix = "" if conn.dialect.name == "sqlite" else f"{SCHEMA}."
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prefix}idx_ws_queue_started")
    conn.exec_driver_sql(
        "CREATE INDEX idx_ws_queue_started "
        f"ON {prefix}workflow_status (queue_name, started_at_epoch_ms) "
        "WHERE queue_name IS NOT NULL AND started_at_epoch_ms IS NOT NULL"
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
    _v6_forks_and_delays,
    _v7_streams,
    _v8_delayed_dedup,
    _v9_step_started_at,
    _v10_identity_columns,
    _v11_serialization,
    _v12_forked_index,
    _v13_queue_order_index,
    _v14_started_index,
]

LATEST_VERSION = len(MIGRATIONS)


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest version (concurrent launches are serialised)."""
    with engine.begin() as conn:
        if conn.dialect.name != "sqlite":
            # Two processes launching at once must not both run a migration. The lock
            # comes first: two concurrent CREATE SCHEMA IF NOT EXISTS can still collide.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(5357494)")
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(sa.select(schema_version.c.version)).scalar()
        if current is None:
            conn.execute(schema_version.insert().values(id=1, version=0))
            current = 0
        if current > LATEST_VERSION:
            raise DBOSNotLaunchedError(
                f"the system database schema is version {current}, newer than this "
                f"Spindle ({LATEST_VERSION}); upgrade Spindle"
            )
        for version in range(current, LATEST_VERSION):
            MIGRATIONS[version](conn)
        conn.execute(schema_version.update().values(version=LATEST_VERSION))
