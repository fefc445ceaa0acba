"""Exact workflow counts by status, kept by the system database itself once asked for.

``GET /metrics`` (and the OTLP metrics push) report how many workflows the system database
holds in each status. Counting them at each scrape reads every row (120 ms on PostgreSQL,
0.4-0.7 s on SQLite at a million finished workflows), so triggers keep the counts instead,
in the same transaction as the statement that inserts, deletes or changes the status of a
row: exact whoever writes (this process, another executor, a ``DBOSClient``, psql).

Installed on first use, not by a migration: the triggers cost every status-changing
statement some database CPU (about 15-20 µs each; 8-12 % of concurrent direct-call
throughput on PostgreSQL on a 2-core machine), which a deployment that never reads the
metric must not pay. The first scrape of a system database creates the table and the
triggers and counts every row once, in one transaction (:func:`install`); from then on
every writer keeps the counts, and a scrape reads a few rows.

``workflow_status_counts`` holds signed partial counts; a status's count is the sum of
its rows.

* PostgreSQL: each backend adds to its own rows (``slot`` = ``pg_backend_pid()``), so
  concurrent writers never wait for each other's row lock (one shared row per status
  would serialise every commit that changes a status). The triggers are per statement,
  reading transition tables, so a bulk statement (a GC batch, a mass cancel, an
  ``INSERT ... SELECT`` of a million rows) makes one write per status, not one per row;
  a row-level trigger would update the same row once per row inside one transaction,
  growing a version chain that each later update walks (quadratic). Rows of backends
  that have exited are folded into slot 0 (:func:`fold_sql`) so the table stays small.
* SQLite: one writer at a time, so one row per status (slot 0), row-level triggers
  (SQLite has no others; it updates the row in place, so a bulk statement stays linear).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from ._schema import SCHEMA, workflow_status_counts

#: Above this many partial rows a scrape folds the rows of exited backends (PostgreSQL).
FOLD_ABOVE = 256

#: pg_advisory_xact_lock key serialising folds (two folds could lock slot 0 rows in
#: different orders otherwise).
_FOLD_LOCK = 5357496
#: The migrations' lock key: two processes installing at once must not both recount.
_INSTALL_LOCK = 5357494

_T = f"{SCHEMA}.workflow_status_counts"
_WS = f"{SCHEMA}.workflow_status"

_PG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.workflow_status_counts_insert() RETURNS TRIGGER AS $$
BEGIN
    INSERT INTO {_T} AS c (status, slot, n)
        SELECT status, pg_backend_pid(), count(*) FROM new_rows GROUP BY status
        ON CONFLICT (status, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION {SCHEMA}.workflow_status_counts_delete() RETURNS TRIGGER AS $$
BEGIN
    INSERT INTO {_T} AS c (status, slot, n)
        SELECT status, pg_backend_pid(), -count(*) FROM old_rows GROUP BY status
        ON CONFLICT (status, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION {SCHEMA}.workflow_status_counts_update() RETURNS TRIGGER AS $$
BEGIN
    -- An UPDATE that changes no status (most of them) nets to zero and writes nothing.
    INSERT INTO {_T} AS c (status, slot, n)
        SELECT status, pg_backend_pid(), sum(d) FROM (
            SELECT status, -1 AS d FROM old_rows
            UNION ALL SELECT status, 1 AS d FROM new_rows
        ) AS moved
        GROUP BY status HAVING sum(d) <> 0
        ON CONFLICT (status, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION {SCHEMA}.workflow_status_counts_truncate() RETURNS TRIGGER AS $$
BEGIN
    DELETE FROM {_T};
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

_PG_TRIGGERS = f"""
DROP TRIGGER IF EXISTS dbos_status_counts_insert ON {_WS};
CREATE TRIGGER dbos_status_counts_insert AFTER INSERT ON {_WS}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.workflow_status_counts_insert();
DROP TRIGGER IF EXISTS dbos_status_counts_delete ON {_WS};
CREATE TRIGGER dbos_status_counts_delete AFTER DELETE ON {_WS}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.workflow_status_counts_delete();
DROP TRIGGER IF EXISTS dbos_status_counts_update ON {_WS};
CREATE TRIGGER dbos_status_counts_update AFTER UPDATE ON {_WS}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.workflow_status_counts_update();
DROP TRIGGER IF EXISTS dbos_status_counts_truncate ON {_WS};
CREATE TRIGGER dbos_status_counts_truncate AFTER TRUNCATE ON {_WS}
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.workflow_status_counts_truncate();
"""

_SQLITE_ADD = (
    "INSERT INTO workflow_status_counts (status, slot, n) VALUES ({row}.status, 0, {d}) "
    "ON CONFLICT (status, slot) DO UPDATE SET n = n + ({d});"
)

_SQLITE_TRIGGERS = (
    "DROP TRIGGER IF EXISTS dbos_status_counts_insert",
    "CREATE TRIGGER dbos_status_counts_insert AFTER INSERT ON workflow_status BEGIN "
    + _SQLITE_ADD.format(row="NEW", d=1)
    + " END",
    "DROP TRIGGER IF EXISTS dbos_status_counts_delete",
    "CREATE TRIGGER dbos_status_counts_delete AFTER DELETE ON workflow_status BEGIN "
    + _SQLITE_ADD.format(row="OLD", d=-1)
    + " END",
    "DROP TRIGGER IF EXISTS dbos_status_counts_update",
    # ``OF status ... WHEN``: an UPDATE that leaves the status alone runs nothing.
    "CREATE TRIGGER dbos_status_counts_update AFTER UPDATE OF status ON workflow_status "
    "WHEN OLD.status IS NOT NEW.status BEGIN "
    + _SQLITE_ADD.format(row="OLD", d=-1)
    + " "
    + _SQLITE_ADD.format(row="NEW", d=1)
    + " END",
)


def installed(conn: Connection) -> bool:
    """True when this system database keeps the counts (its triggers exist)."""
    if conn.dialect.name == "sqlite":
        sql = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?"
        found = conn.exec_driver_sql(sql, ("dbos_status_counts_%",)).scalar()
    else:
        sql = (
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE %s "
            f"AND tgrelid = to_regclass('{_WS}')"
        )
        found = conn.exec_driver_sql(sql, ("dbos_status_counts_%",)).scalar()
    # Every trigger, not just one: a partial set (dropped by hand) is reinstalled.
    return found == (3 if conn.dialect.name == "sqlite" else 4)


def install(conn: Connection) -> None:
    """Create the table and the triggers, then count every row once (re-runnable).

    The recount comes after the triggers in the same transaction: on PostgreSQL
    ``CREATE TRIGGER`` locks out writers of ``workflow_status`` until the commit (they
    wait that long, once), and SQLite has one writer, so no write falls between the
    count and the first trigger.
    """
    sqlite = conn.dialect.name == "sqlite"
    if not sqlite:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_INSTALL_LOCK})")
        if installed(conn):
            return  # another process installed them while we waited
    workflow_status_counts.create(conn, checkfirst=True)
    table = "workflow_status_counts" if sqlite else _T
    if sqlite:
        for statement in _SQLITE_TRIGGERS:
            conn.exec_driver_sql(statement)
    else:
        # One driver call per script: psycopg runs a parameterless multi-statement string
        # with the simple query protocol.
        conn.exec_driver_sql(_PG_FUNCTIONS)
        conn.exec_driver_sql(_PG_TRIGGERS)
    source = "workflow_status" if sqlite else _WS
    conn.exec_driver_sql(f"DELETE FROM {table}")
    conn.exec_driver_sql(
        f"INSERT INTO {table} (status, slot, n) "
        f"SELECT status, 0, count(*) FROM {source} GROUP BY status"
    )


def read_sql(sqlite: bool) -> str:
    """Each status's count and how many partial rows make it up."""
    table = "workflow_status_counts" if sqlite else _T
    return f"SELECT status, sum(n), count(*) FROM {table} GROUP BY status"


def fold_sql() -> tuple[str, str]:
    """PostgreSQL: the lock, then the move of exited backends' rows into slot 0.

    Only ever a transfer inside one transaction, so a count never changes meaning: a
    row whose pid a new backend reuses is still locked and summed correctly, and a
    writer's uncommitted row is not visible to the DELETE, so it stays for a later fold.
    """
    lock = f"SELECT pg_advisory_xact_lock({_FOLD_LOCK})"
    fold = (
        f"WITH gone AS (DELETE FROM {_T} WHERE slot <> 0 AND slot NOT IN "
        "(SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL) RETURNING status, n) "
        f"INSERT INTO {_T} AS c (status, slot, n) SELECT status, 0, sum(n) FROM gone "
        "GROUP BY status ON CONFLICT (status, slot) DO UPDATE SET n = c.n + EXCLUDED.n"
    )
    return lock, fold
