"""The system-database queries behind DBOS's introspection and management calls:
workflows by every ``list_workflows`` filter, a workflow's steps, its events, deletion.

Reads take one statement each; deletion takes one transaction. Nothing here runs on the
hot path of a workflow. Each runs whole again on a transient error (``@retried``): the
reads trivially, the updates and the deletion because running them twice ends the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from ._attributes import contains as attributes_contain
from ._db_retry import retried
from ._rows import DELAYED, ENQUEUED, PENDING, TERMINAL, StatusRow
from ._schema import notifications as nt
from ._schema import operation_outputs as oo
from ._schema import workflow_events as we
from ._schema import workflow_status as ws
from ._serialization import as_bytes
from ._sysdb import SystemDatabase, rare


@dataclass(frozen=True, slots=True)
class StatusDetailRow(StatusRow):
    """A status row with the queue and fork columns DBOS's ``WorkflowStatus`` shows."""

    TABLE: ClassVar[sa.Table] = ws

    deduplication_id: str | None
    priority: int
    started_at_epoch_ms: int | None
    forked_from: str | None
    delay_until_epoch_ms: int | None
    attributes: str | None
    class_name: str | None
    config_name: str | None
    authenticated_user: str | None
    assumed_role: str | None
    authenticated_roles: str | None


StatusDetailRow.check()


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters of ``list_workflows``, times already in epoch milliseconds.

    ``unmatchable`` is set when a filter names something Spindle never records (schedule
    or application names): no row can match it, as in DBOS where
    such a column is NULL.
    """

    workflow_ids: Sequence[str] | None = None
    status: Sequence[str] | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    completed_after_ms: int | None = None
    completed_before_ms: int | None = None
    dequeued_after_ms: int | None = None
    dequeued_before_ms: int | None = None
    name: Sequence[str] | None = None
    app_version: Sequence[str] | None = None
    forked_from: Sequence[str] | None = None
    parent_workflow_id: Sequence[str] | None = None
    queue_name: Sequence[str] | None = None
    workflow_id_prefix: Sequence[str] | None = None
    executor_id: Sequence[str] | None = None
    #: Workflows started as one of these users (the ``authenticated_user`` column).
    user: Sequence[str] | None = None
    queues_only: bool = False
    was_forked_from: bool | None = None
    has_parent: bool | None = None
    #: Workflows whose attributes contain all these key/values (PostgreSQL only, as DBOS).
    attributes: dict[str, Any] | None = None
    unmatchable: bool = False
    limit: int | None = None
    offset: int | None = None
    sort_desc: bool = False


def _where(f: Filters, *, sqlite: bool) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    lists: tuple[tuple[Sequence[str] | None, sa.ColumnElement[Any]], ...] = (
        (f.workflow_ids, ws.c.workflow_uuid),
        (f.name, ws.c.name),
        (f.app_version, ws.c.application_version),
        (f.forked_from, ws.c.forked_from),
        (f.parent_workflow_id, ws.c.parent_workflow_id),
        (f.queue_name, ws.c.queue_name),
        (f.executor_id, ws.c.executor_id),
        (f.user, ws.c.authenticated_user),
    )
    for values, column in lists:
        if values is not None:
            clauses.append(column.in_(list(values)))
    status = f.status
    if f.queues_only:
        clauses.append(ws.c.queue_name.isnot(None))
        if status is None:
            status = [DELAYED, ENQUEUED, PENDING]
    if status is not None:
        by_status: sa.ColumnElement[bool] = ws.c.status.in_(list(status))
        if sqlite and _active(status):
            by_status = rare(by_status)
        clauses.append(by_status)
    bounds = (
        (f.start_ms, ws.c.created_at, True),
        (f.end_ms, ws.c.created_at, False),
        (f.dequeued_after_ms, ws.c.started_at_epoch_ms, True),
        (f.dequeued_before_ms, ws.c.started_at_epoch_ms, False),
    )
    for bound, column, lower in bounds:
        if bound is not None:
            clauses.append(column >= bound if lower else column <= bound)
    # A finished workflow's last update is its completion (nothing writes it afterwards).
    finished = ws.c.status.in_(list(TERMINAL))
    if f.completed_after_ms is not None:
        clauses.append(sa.and_(finished, ws.c.updated_at >= f.completed_after_ms))
    if f.completed_before_ms is not None:
        clauses.append(sa.and_(finished, ws.c.updated_at <= f.completed_before_ms))
    if f.workflow_id_prefix is not None:
        clauses.append(
            sa.or_(
                *(ws.c.workflow_uuid.startswith(p, autoescape=True) for p in f.workflow_id_prefix)
            )
        )
    if f.has_parent is not None:
        has = ws.c.parent_workflow_id.isnot(None)
        clauses.append(has if f.has_parent else sa.not_(has))
    if f.was_forked_from is not None:
        fork = ws.alias("fork")
        forked = sa.exists().where(fork.c.forked_from == ws.c.workflow_uuid)
        clauses.append(forked if f.was_forked_from else sa.not_(forked))
    if f.attributes is not None:
        clauses.append(attributes_contain(f.attributes, sqlite=sqlite))
    if f.unmatchable:
        clauses.append(sa.false())
    return clauses


def _active(status: Sequence[str] | None) -> bool:
    """A listing of queued, delayed or running workflows only: few rows of a large table."""
    return bool(status) and set(status or ()) <= {DELAYED, ENQUEUED, PENDING}


@retried
def list_status(sysdb: SystemDatabase, f: Filters) -> tuple[list[StatusDetailRow], set[str]]:
    """The matching rows in creation order (reversed by ``sort_desc``), and which of them
    were forked from."""
    stmt = sa.select(*StatusDetailRow.columns()).where(*_where(f, sqlite=sysdb.sqlite))
    created: sa.ColumnElement[Any] = ws.c.created_at
    if sysdb.sqlite and f.workflow_ids is None and (f.queues_only or _active(f.status)):
        # "+ 0": not the index's column, so SQLite cannot walk idx_ws_created_at for the
        # order, over every finished row (its statistics cannot tell that few rows are
        # queued or PENDING: 100 ms at a million rows); it searches the status or queue
        # index and sorts the few rows found. PostgreSQL's statistics know.
        created = ws.c.created_at + 0
    keys = (created, ws.c.workflow_uuid)
    stmt = stmt.order_by(*(k.desc() if f.sort_desc else k.asc() for k in keys))
    if f.limit is not None:
        stmt = stmt.limit(f.limit)
    if f.offset is not None:
        stmt = stmt.offset(f.offset)
    with sysdb.transaction(read=True) as conn:
        rows = [StatusDetailRow.from_mapping(r._mapping) for r in conn.execute(stmt)]
        ids = [r.workflow_id for r in rows]
        forked: set[str] = set()
        if ids:
            forked = {
                r[0]
                for r in conn.execute(
                    sa.select(ws.c.forked_from).where(ws.c.forked_from.in_(ids)).distinct()
                )
            }
    return rows, forked


@retried
def all_events(sysdb: SystemDatabase, workflow_id: str) -> dict[str, tuple[bytes, str | None]]:
    """Every event a workflow set, serialized, with its format, by key."""
    stmt = sa.select(we.c.key, we.c.value, we.c.serialization).where(
        we.c.workflow_uuid == workflow_id
    )
    with sysdb.transaction(read=True) as conn:
        return {r[0]: (as_bytes(r[1]), r[2]) for r in conn.execute(stmt)}


@retried
def descendants(sysdb: SystemDatabase, workflow_ids: Sequence[str]) -> list[str]:
    """The given workflows and every child, grandchild, ... of theirs."""
    tree = (
        sa.select(ws.c.workflow_uuid)
        .where(ws.c.workflow_uuid.in_(list(workflow_ids)))
        .cte("tree", recursive=True)
    )
    child = ws.alias("child")
    tree = tree.union(
        sa.select(child.c.workflow_uuid).where(child.c.parent_workflow_id == tree.c.workflow_uuid)
    )
    with sysdb.transaction(read=True) as conn:
        return [r[0] for r in conn.execute(sa.select(tree.c.workflow_uuid))]


@retried
def delete(sysdb: SystemDatabase, workflow_ids: Sequence[str]) -> int:
    """Delete workflows with their steps, messages and events; returns how many existed."""
    ids = list(workflow_ids)
    if not ids:
        return 0
    with sysdb.transaction() as conn:
        # Children rows first: SQLite enforces the foreign keys, and not every table has one.
        conn.execute(oo.delete().where(oo.c.workflow_uuid.in_(ids)))
        conn.execute(nt.delete().where(nt.c.destination_uuid.in_(ids)))
        conn.execute(we.delete().where(we.c.workflow_uuid.in_(ids)))
        return int(conn.execute(ws.delete().where(ws.c.workflow_uuid.in_(ids))).rowcount)


@retried
def place_fork(
    sysdb: SystemDatabase,
    workflow_id: str,
    *,
    queue_name: str | None,
    queue_partition_key: str | None,
    timeout_ms: int | None,
    deadline_epoch_ms: int | None,
) -> None:
    """Finish a fresh fork's row: onto a queue (ENQUEUED, started there under its limits)
    or not, and with its own timeout when one was given."""
    values: dict[str, Any] = {"queue_partition_key": queue_partition_key}
    if queue_name is not None:
        values.update(status=ENQUEUED, queue_name=queue_name, started_at_epoch_ms=None)
    if timeout_ms is not None:
        values.update(workflow_timeout_ms=timeout_ms, workflow_deadline_epoch_ms=deadline_epoch_ms)
    with sysdb.transaction() as conn:
        conn.execute(ws.update().where(ws.c.workflow_uuid == workflow_id).values(**values))


@retried
def set_queue(sysdb: SystemDatabase, workflow_id: str, queue_name: str) -> None:
    """Move a (not yet resumed) workflow to another queue, for ``resume_workflow(queue_name=)``."""
    with sysdb.transaction() as conn:
        conn.execute(
            ws.update().where(ws.c.workflow_uuid == workflow_id).values(queue_name=queue_name)
        )
