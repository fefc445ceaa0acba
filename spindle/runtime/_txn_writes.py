"""``DBOSClient``'s writes in the caller's transaction (``send_in_transaction``,
``send_bulk_in_transaction``, ``enqueue_in_transaction``): the rows commit or roll back
with the caller's own work on the system database.

The caller owns the transaction, so these run no retry of their own (a retried write
could not be told from the caller's other work) and open none. A refused row (an unknown
destination, a held deduplication ID) raises DBOS's error and leaves the caller's
transaction usable: on PostgreSQL the write sits in a savepoint (an error there would
abort the whole transaction); SQLite undoes only the failed statement by itself, and a
savepoint there would be wrong (pysqlite opens no transaction before it, so its RELEASE
would commit the caller's work).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._bulk_send import message_rows
from ._client_handles import CLIENT_EXECUTOR_ID
from ._enqueue_options import EnqueueOptions, check_options
from ._errors import (
    DBOSConflictingWorkflowError,
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSQueueDeduplicatedError,
)
from ._messaging_db import is_foreign_key_violation
from ._rows import DELAYED, ENQUEUED, now_ms
from ._schema import ENQUEUE_SEQUENCE, SCHEMA
from ._schema import notifications as nt
from ._schema import workflow_status as ws
from ._serialization import serialize

Executor = Connection | Session


def _is_sqlite(db: Executor) -> bool:
    bind = db.get_bind() if isinstance(db, Session) else db
    return bind.dialect.name == "sqlite"


def _execute(db: Executor, stmt: sa.Executable) -> sa.CursorResult[Any]:
    # The caller's engine may not map the "dbos" schema away on SQLite, as Spindle's does.
    options = {"schema_translate_map": {SCHEMA: None}} if _is_sqlite(db) else {}
    result = db.execute(stmt, execution_options=options)
    return result  # type: ignore[return-value]


def _statement_guard(db: Executor) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if _is_sqlite(db) else db.begin_nested()


def send_many(db: Executor, messages: Sequence[tuple[str, str, bytes]]) -> None:
    """Insert ``(destination, topic, message)`` rows in the caller's transaction."""
    if not messages:
        return
    rows = message_rows(messages)
    try:
        with _statement_guard(db):
            _execute(db, nt.insert().values(rows))
    except IntegrityError as exc:
        if is_foreign_key_violation(exc):
            dests = ", ".join(sorted({m[0] for m in messages}))
            raise DBOSNonExistentWorkflowError("`send` destination", dests) from exc
        raise


def enqueue(
    db: Executor, options: EnqueueOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    """Insert the ENQUEUED (or DELAYED) row in the caller's transaction; returns its ID
    (idempotent by ``workflow_id``, as ``DBOSClient.enqueue``)."""
    name, queue_name, priority, timeout, delay = check_options(options)
    if options.get("duplication_policy") is not None:
        raise DBOSException("enqueue_in_transaction does not take a duplication_policy")
    workflow_id = options.get("workflow_id") or str(uuid.uuid4())
    dedup = options.get("deduplication_id")
    attributes = options.get("attributes")
    now = now_ms()
    values: dict[str, Any] = {
        "workflow_uuid": workflow_id,
        "status": DELAYED if delay is not None else ENQUEUED,
        "name": name,
        "inputs": serialize((args, kwargs), f"the inputs of workflow {name!r}"),
        "executor_id": CLIENT_EXECUTOR_ID,
        "application_version": options.get("app_version"),
        "created_at": now,
        "updated_at": now,
        "recovery_attempts": 0,
        "workflow_timeout_ms": int(timeout * 1000) if timeout is not None else None,
        "queue_name": queue_name,
        "deduplication_id": dedup,
        "priority": priority or 0,
        "queue_partition_key": options.get("queue_partition_key"),
        "delay_until_epoch_ms": now + int(delay * 1000) if delay is not None else None,
        "attributes": json.dumps(attributes) if attributes is not None else None,
    }
    if _is_sqlite(db):
        stmt: Any = sqlite.insert(ws).values(values)
    else:
        # FIFO among same-millisecond enqueues, as the hot-path enqueue numbers them.
        values["enqueue_seq"] = sa.text(f"nextval('{SCHEMA}.{ENQUEUE_SEQUENCE}')")
        stmt = postgresql.insert(ws).values(values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["workflow_uuid"])
    try:
        with _statement_guard(db):
            inserted = _execute(db, stmt).rowcount
    except IntegrityError as exc:
        if dedup is None:
            raise
        raise DBOSQueueDeduplicatedError(workflow_id, queue_name, dedup) from exc
    if inserted == 0:
        existing = _execute(
            db, sa.select(ws.c.name).where(ws.c.workflow_uuid == workflow_id)
        ).scalar()
        if existing is not None and existing != name:
            raise DBOSConflictingWorkflowError(
                workflow_id,
                f"Workflow already exists with a different function name: {existing}, "
                f"but the provided function name is: {name}",
            )
    return workflow_id
