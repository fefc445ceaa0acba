"""DBOS's introspection and management calls as functions of the Runtime: workflow status
and lists with every DBOS filter, a workflow's steps (``StepInfo``), its events, deletion.

Inside a workflow the facade wraps the reads in ``_durable.call`` (as DBOS records them as
steps), so a replayed workflow sees what its first run saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from . import _admin_db, _introspect_db
from ._errors import DBOSNonExistentWorkflowError
from ._status import WorkflowStatus

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._sysdb import SystemDatabase


class StepInfo(TypedDict):
    """One recorded step of a workflow, with DBOS's ``StepInfo`` keys.

    A one-statement operation (send, set_event, a stream write, recv's take) records no
    start of its own: its ``started_at_epoch_ms`` is its commit, as its completion is.
    """

    function_id: int
    function_name: str
    output: Any
    error: BaseException | None
    child_workflow_id: str | None
    started_at_epoch_ms: int | None
    completed_at_epoch_ms: int | None


class WorkflowFilters(TypedDict, total=False):
    """The keyword filters of ``DBOS.list_workflows`` (DBOS 2.30's names)."""

    workflow_ids: list[str] | None
    status: str | list[str] | None
    start_time: str | None
    end_time: str | None
    completed_after: str | None
    completed_before: str | None
    dequeued_after: str | None
    dequeued_before: str | None
    name: str | list[str] | None
    app_version: str | list[str] | None
    forked_from: str | list[str] | None
    parent_workflow_id: str | list[str] | None
    user: str | list[str] | None
    queue_name: str | list[str] | None
    limit: int | None
    offset: int | None
    sort_desc: bool
    workflow_id_prefix: str | list[str] | None
    load_input: bool
    load_output: bool
    executor_id: str | list[str] | None
    queues_only: bool
    was_forked_from: bool | None
    has_parent: bool | None
    attributes: dict[str, Any] | None
    schedule_name: str | list[str] | None
    application_name: str | list[str] | None


_LISTS = (
    "workflow_ids",
    "status",
    "name",
    "app_version",
    "forked_from",
    "parent_workflow_id",
    "queue_name",
    "workflow_id_prefix",
    "executor_id",
    "user",
)
_TIMES = (
    ("start_time", "start_ms"),
    ("end_time", "end_ms"),
    ("completed_after", "completed_after_ms"),
    ("completed_before", "completed_before_ms"),
    ("dequeued_after", "dequeued_after_ms"),
    ("dequeued_before", "dequeued_before_ms"),
)
#: Filters on what Spindle never records: a value other than None matches no workflow.
_NEVER_RECORDED = ("schedule_name", "application_name")
_FLAGS = ("sort_desc", "load_input", "load_output", "queues_only")
_TRISTATE = ("was_forked_from", "has_parent")
KNOWN_FILTERS = frozenset(WorkflowFilters.__annotations__)


def _iso_ms(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key} must be an ISO 8601 timestamp, got {value!r}") from exc


def _as_list(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{key} must be a string or a list of strings, got {value!r}")
    return list(values)


def _count(value: Any, key: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def build_filters(given: Mapping[str, Any], *, queues_only: bool = False) -> Filters:
    """Validate ``list_workflows`` keywords into a query's filters (a bad one raises,
    naming itself, as a call with a wrong keyword does)."""
    unknown = sorted(set(given) - KNOWN_FILTERS)
    if unknown:
        raise TypeError(f"list_workflows() got an unexpected keyword argument {unknown[0]!r}")
    values: dict[str, Any] = {}
    for key in _LISTS:
        values[key] = _as_list(given.get(key), key)
    for key, field in _TIMES:
        values[field] = _iso_ms(given.get(key), key)
    for key in ("limit", "offset"):
        values[key] = _count(given.get(key), key)
    for key in _TRISTATE:
        flag = given.get(key)
        if flag is not None and not isinstance(flag, bool):
            raise ValueError(f"{key} must be True, False or None, got {flag!r}")
        values[key] = flag
    values["attributes"] = given.get("attributes")
    values["sort_desc"] = bool(given.get("sort_desc", False))
    values["queues_only"] = queues_only or bool(given.get("queues_only", False))
    values["unmatchable"] = any(given.get(key) is not None for key in _NEVER_RECORDED)
    return _introspect_db.Filters(**values)


Filters = _introspect_db.Filters


def list_workflows(
    rt: Runtime, given: Mapping[str, Any], *, queues_only: bool = False
) -> list[WorkflowStatus]:
    """Workflows matching DBOS's ``list_workflows`` filters, oldest first."""
    rt.require_launched()
    return list_workflows_in(rt.sysdb, given, queues_only=queues_only)


def list_workflows_in(
    sysdb: SystemDatabase, given: Mapping[str, Any], *, queues_only: bool = False
) -> list[WorkflowStatus]:
    """:func:`list_workflows` on a system database alone (``DBOSClient`` has no runtime)."""
    return query_workflows(
        sysdb,
        build_filters(given, queues_only=queues_only),
        load_input=bool(given.get("load_input", True)),
        load_output=bool(given.get("load_output", True)),
    )


def query_workflows(
    sysdb: SystemDatabase, filters: Filters, *, load_input: bool = True, load_output: bool = True
) -> list[WorkflowStatus]:
    """The one workflow listing every surface shares (the facade, the admin API, the
    conductor, the CLI, the client): no launch check, so the conductor answers during
    ``destroy()`` and the CLI reads a database no app has open. ``list_status`` runs under
    the transient-error retry (``@retried``)."""
    rows, forked = _introspect_db.list_status(sysdb, filters)
    return [
        WorkflowStatus.from_row(
            r,
            sysdb.codecs,
            load_input=load_input,
            load_output=load_output,
            was_forked_from=r.workflow_id in forked,
        )
        for r in rows
    ]


def workflow_status(rt: Runtime, workflow_id: str) -> WorkflowStatus | None:
    """One workflow's status with every DBOS field, or None."""
    found = list_workflows(rt, {"workflow_ids": [workflow_id]})
    return found[0] if found else None


def _loaded(fn: Any, data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return fn(data)
    except Exception as exc:  # written by code this process cannot import
        return f"<cannot deserialize: {type(exc).__name__}: {exc}>"


def list_steps(
    rt: Runtime,
    workflow_id: str,
    *,
    load_output: bool = True,
    limit: int | None = None,
    offset: int | None = None,
) -> list[StepInfo]:
    """A workflow's recorded steps, in order (an unknown workflow has none, as in DBOS)."""
    rt.require_launched()
    return list_steps_in(rt.sysdb, workflow_id, load_output=load_output, limit=limit, offset=offset)


def list_steps_in(
    sysdb: SystemDatabase,
    workflow_id: str,
    *,
    load_output: bool = True,
    limit: int | None = None,
    offset: int | None = None,
) -> list[StepInfo]:
    """:func:`list_steps` on a system database alone (``step_rows`` is ``@retried``)."""
    rows = _admin_db.step_rows(
        sysdb, workflow_id, limit=_count(limit, "limit"), offset=_count(offset, "offset")
    )
    return [
        StepInfo(
            function_id=row.function_id,
            function_name=row.function_name,
            output=_loaded(sysdb.codecs.get(row.serialization).decode, row.output)
            if load_output
            else None,
            error=_loaded(sysdb.codecs.get(row.serialization).decode_error, row.error)
            if load_output
            else None,
            child_workflow_id=row.child_workflow_id,
            started_at_epoch_ms=row.started_at,
            completed_at_epoch_ms=row.completed_at,
        )
        for row in rows
    ]


def all_events(rt: Runtime, workflow_id: str) -> dict[str, Any]:
    """Every event a workflow set, by key (an unknown workflow has none)."""
    rt.require_launched()
    codecs = rt.sysdb.codecs
    return {
        k: codecs.decode(*v) for k, v in _introspect_db.all_events(rt.sysdb, workflow_id).items()
    }


def delete_workflows(rt: Runtime, workflow_ids: Sequence[str], *, delete_children: bool) -> None:
    """Delete workflows (and, with ``delete_children``, their descendants) with everything
    recorded about them. A workflow still running here is cancelled first, so it stops at
    its next step instead of writing into deleted rows."""
    rt.require_launched()
    ids = list(workflow_ids)
    if delete_children:
        ids = _introspect_db.descendants(rt.sysdb, ids)
    for wf_id in ids:
        entry = rt.active.get(wf_id)
        if entry is not None:
            rt.sysdb.cancel(wf_id)
            rt.timeouts.remove(wf_id)
            entry.cancel()
    rt.active.forget_finished(ids)
    _introspect_db.delete(rt.sysdb, ids)


def require_status(rt: Runtime, workflow_id: str) -> WorkflowStatus:
    """The status, or ``DBOSNonExistentWorkflowError``."""
    status = workflow_status(rt, workflow_id)
    if status is None:
        raise DBOSNonExistentWorkflowError(workflow_id)
    return status
