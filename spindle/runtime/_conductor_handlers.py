"""What the conductor client answers: one handler per message type, and ``answer``.

Each handler takes the Runtime and the parsed request and returns the reply's own fields;
``answer`` wraps it so that every frame gets exactly one reply with the request's ``type``
and ``request_id``, whatever happens (a bad field, a failing database, an unknown type).

Reads go to the system database directly rather than through the facade's checks: the
conductor is stopped after the workflow drain, so it answers during the first phases of
``destroy()`` (DBOS issue #824), when the facade already refuses calls. Management actions
(cancel, resume, fork, ...) still go through the runtime's rules and are refused then.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from spindle.diagnostics import dump_stacks

from . import _admin_db, _introspect_db, _introspection, _management, _schedule_api, _workflows
from ._alerts import handle_alert
from ._conductor_protocol import (
    UNKNOWN_TYPE_ERROR,
    BadField,
    MessageType,
    body,
    field,
    parse,
    reply,
    step_output,
    workflow_output,
)
from ._db_retry import retried
from ._queue import GLOBAL_QUEUES, Queue
from ._rows import ENQUEUED, PENDING
from ._schedules import ACTIVE, PAUSED, WorkflowSchedule
from ._schema import notifications, operation_outputs, workflow_events, workflow_status
from ._serialization import Codecs
from ._status import WorkflowStatus

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._sysdb import SystemDatabase

logger = logging.getLogger("spindle")

Fields = dict[str, Any]
Handler = Callable[["Runtime", dict[str, Any]], Fields]

#: DBOS types Spindle has nothing behind: answered with this error, never dropped.
UNSUPPORTED: frozenset[str] = frozenset(
    {
        MessageType.EXPORT_WORKFLOW,
        MessageType.IMPORT_WORKFLOW,
        MessageType.LIST_APPLICATION_VERSIONS,
        MessageType.SET_LATEST_APPLICATION_VERSION,
        MessageType.GET_WORKFLOW_STREAMS,
        MessageType.GET_WORKFLOW_AGGREGATES,
        MessageType.GET_STEP_AGGREGATES,
        MessageType.FORK_FROM_FAILURE,
        MessageType.REWIND_WORKFLOW,
    }
)


def spindle_version() -> str:
    """The installed Spindle version (``executor_info``'s ``dbos_version``)."""
    try:
        return f"spindle-{version('spindle')}"
    except PackageNotFoundError:
        return "spindle"


def _ids(msg: dict[str, Any]) -> list[str]:
    """``workflow_ids`` when given (DBOS's batch form), else ``[workflow_id]``."""
    many = field(msg, "workflow_ids", list, None)
    if many:
        if not all(isinstance(x, str) for x in many):
            raise BadField("field 'workflow_ids' must be a list of strings")
        return list(many)
    return [field(msg, "workflow_id", str)]


def _iso_ms(value: Any, key: str) -> int | None:
    if value is None:
        return None
    try:
        return int(datetime.fromisoformat(str(value)).timestamp() * 1000)
    except ValueError:
        raise BadField(f"field {key!r} must be an ISO 8601 timestamp, got {value!r}") from None


def _str_or_list(b: dict[str, Any], key: str) -> str | list[str] | None:
    value = field(b, key, (str, list), None)
    if isinstance(value, list) and not all(isinstance(x, str) for x in value):
        raise BadField(f"field {key!r} must be a string or a list of strings")
    return value  # type: ignore[no-any-return]


def _as_list(value: str | list[str] | None) -> list[str] | None:
    return [value] if isinstance(value, str) else value


def _list(rt: Runtime, b: dict[str, Any], *, queues_only: bool) -> Fields:
    # The conductor's fields checked here (a bad one is a "Bad request" reply); the query is
    # the one the facade and the admin API run (was_forked_from, several names in SQL).
    limit = field(b, "limit", int, None)
    offset = field(b, "offset", int, None)
    if (limit is not None and limit < 0) or (offset is not None and offset < 0):
        raise BadField("fields 'limit' and 'offset' must be >= 0")
    ids = field(b, "workflow_uuids", list, None)
    if ids is not None and not all(isinstance(x, str) for x in ids):
        raise BadField("field 'workflow_uuids' must be a list of strings")
    filters = _introspection.Filters(
        workflow_ids=ids,
        status=_as_list(_str_or_list(b, "status")),
        name=_as_list(_str_or_list(b, "workflow_name")),
        start_ms=_iso_ms(b.get("start_time"), "start_time"),
        end_ms=_iso_ms(b.get("end_time"), "end_time"),
        queue_name=_as_list(_str_or_list(b, "queue_name")),
        queues_only=queues_only,
        limit=limit,
        offset=offset,
        sort_desc=bool(field(b, "sort_desc", bool, False)),
    )
    load_output = bool(field(b, "load_output", bool, False))
    statuses = _introspection.query_workflows(
        rt.sysdb,
        filters,
        load_input=bool(field(b, "load_input", bool, False)),
        load_output=load_output,
    )
    out = []
    for s in statuses:
        o = workflow_output(s)
        if not load_output:
            o["Output"] = None
            o["Error"] = None
        out.append(o)
    return {"output": out}


def _executor_info(rt: Runtime, _msg: dict[str, Any]) -> Fields:
    cfg = rt.config
    return {
        "executor_id": cfg.executor_id,
        "application_version": cfg.application_version,
        "hostname": socket.gethostname(),
        "language": "python",
        "dbos_version": spindle_version(),
        # The app's conductor_executor_metadata (DBOS's key), then Spindle's own: what the
        # fleet page shows beside the executor.
        "executor_metadata": {
            **(cfg.dbos_settings.get("conductor_executor_metadata") or {}),
            "runtime": "spindle",
            "app": cfg.name,
            "pid": os.getpid(),
        },
    }


def _recovery(rt: Runtime, msg: dict[str, Any]) -> Fields:
    ids = field(msg, "executor_ids", list)
    if not all(isinstance(x, str) for x in ids):
        raise BadField("field 'executor_ids' must be a list of strings")
    rt.require_launched()
    _workflows.recover_pending(rt, ids)
    return {"success": True}


# Management actions: the runtime's operations (_management), as the facade and the admin
# API run them; only the protocol's fields are read and written here.
def _cancel(rt: Runtime, msg: dict[str, Any]) -> Fields:
    for wf_id in _ids(msg):
        _management.cancel(rt, wf_id)
    return {"success": True}


def _resume(rt: Runtime, msg: dict[str, Any]) -> Fields:
    for wf_id in _ids(msg):
        _management.resume(rt, wf_id)
    return {"success": True}


def _restart(rt: Runtime, msg: dict[str, Any]) -> Fields:
    _management.restart(rt, field(msg, "workflow_id", str))
    return {"success": True}


def _fork_workflow(rt: Runtime, msg: dict[str, Any]) -> Fields:
    b = body(msg)
    start = field(b, "start_step", int, 1)
    if start < 1:
        raise BadField("field 'start_step' must be >= 1")
    new_id = _management.fork(
        rt,
        field(b, "workflow_id", str),
        start,
        new_workflow_id=field(b, "new_workflow_id", str, None),
        application_version=field(b, "application_version", str, None),
    )
    return {"new_workflow_id": new_id}


def _delete(rt: Runtime, msg: dict[str, Any]) -> Fields:
    rt.require_launched()
    _delete_rows(rt.sysdb, _ids(msg), field(msg, "delete_children", bool, False))
    return {"success": True}


@retried
def _delete_rows(sysdb: SystemDatabase, ids: list[str], delete_children: bool) -> None:
    # One transaction: the PENDING check and the deletion see the same rows. A replay after
    # an ambiguous commit finds nothing left to delete: the same outcome.
    ids = list(ids)
    with sysdb.transaction() as conn:
        if delete_children:
            # Children are found through their parent's column, generation by generation.
            frontier = list(ids)
            while frontier:
                children = [
                    r[0]
                    for r in conn.execute(
                        sa.select(workflow_status.c.workflow_uuid).where(
                            workflow_status.c.parent_workflow_id.in_(frontier)
                        )
                    )
                    if r[0] not in ids
                ]
                ids.extend(children)
                frontier = children
        active = [
            r[0]
            for r in conn.execute(
                sa.select(workflow_status.c.workflow_uuid).where(
                    workflow_status.c.workflow_uuid.in_(ids),
                    workflow_status.c.status.in_([PENDING, ENQUEUED]),
                )
            )
        ]
        if active:
            # A running workflow's next checkpoint would fail on a missing row: refuse.
            raise BadField(f"cannot delete workflows still PENDING or ENQUEUED: {active}")
        for table, column in (
            (operation_outputs, operation_outputs.c.workflow_uuid),
            (workflow_events, workflow_events.c.workflow_uuid),
            (notifications, notifications.c.destination_uuid),
            (workflow_status, workflow_status.c.workflow_uuid),
        ):
            conn.execute(table.delete().where(column.in_(ids)))


def _list_workflows(rt: Runtime, msg: dict[str, Any]) -> Fields:
    return _list(rt, body(msg), queues_only=False)


def _list_queued(rt: Runtime, msg: dict[str, Any]) -> Fields:
    return _list(rt, body(msg), queues_only=True)


def _get_workflow(rt: Runtime, msg: dict[str, Any]) -> Fields:
    row = rt.sysdb.get_status(field(msg, "workflow_id", str))
    if row is None:
        return {"output": None}
    return {"output": workflow_output(WorkflowStatus.from_row(row, rt.sysdb.codecs))}


def _exist_pending(rt: Runtime, msg: dict[str, Any]) -> Fields:
    ids = rt.sysdb.pending_workflow_ids(
        [field(msg, "executor_id", str)], field(msg, "application_version", str)
    )
    return {"exist": bool(ids)}


def _list_steps(rt: Runtime, msg: dict[str, Any]) -> Fields:
    wf_id = field(msg, "workflow_id", str)
    if rt.sysdb.get_status(wf_id) is None:
        return {"output": None}
    steps = [step_output(s) for s in _admin_db.list_steps(rt.sysdb, wf_id)]
    offset = field(msg, "offset", int, 0)
    limit = field(msg, "limit", int, None)
    steps = steps[offset:]
    if limit is not None:
        steps = steps[:limit]
    if not field(msg, "load_output", bool, True):
        for s in steps:
            s["output"] = None
    return {"output": steps}


def _retention(rt: Runtime, msg: dict[str, Any]) -> Fields:
    rt.require_launched()
    b = body(msg)
    _admin_db.garbage_collect(
        rt.sysdb,
        cutoff_epoch_ms=field(b, "gc_cutoff_epoch_ms", int, None),
        rows_threshold=field(b, "gc_rows_threshold", int, None),
    )
    rt.active.forget_finished()  # rows are gone: handles read the database again
    timeout_cutoff = field(b, "timeout_cutoff_epoch_ms", int, None)
    if timeout_cutoff is not None:
        for wf_id in _admin_db.global_timeout(rt.sysdb, timeout_cutoff):
            entry = rt.active.get(wf_id)
            if entry is not None:
                entry.cancel()
    return {"success": True}


def _get_metrics(rt: Runtime, msg: dict[str, Any]) -> Fields:
    metric_class = field(msg, "metric_class", str)
    if metric_class != "workflow_step_count":
        # DBOS's wording, with an empty metrics list.
        return {"metrics": [], "error_message": f"Unexpected metric class: {metric_class}"}
    start = _iso_ms(field(msg, "start_time", str), "start_time")
    end = _iso_ms(field(msg, "end_time", str), "end_time")
    workflows, steps = _step_counts(rt.sysdb, start, end)
    metrics = [
        {"metric_type": "workflow_count", "metric_name": name, "value": int(n)}
        for name, n in workflows
    ] + [{"metric_type": "step_count", "metric_name": name, "value": int(n)} for name, n in steps]
    return {"metrics": metrics}


@retried
def _step_counts(
    sysdb: SystemDatabase, start: int | None, end: int | None
) -> tuple[list[Any], list[Any]]:
    """(workflow name, count) created and (step name, count) completed in [start, end)."""
    ws, oo = workflow_status, operation_outputs
    with sysdb.transaction(read=True) as conn:
        workflows = conn.execute(
            sa.select(ws.c.name, sa.func.count())
            .where(ws.c.created_at >= start, ws.c.created_at < end)
            .group_by(ws.c.name)
        ).all()
        steps = conn.execute(
            sa.select(oo.c.function_name, sa.func.count())
            .where(oo.c.completed_at >= start, oo.c.completed_at < end)
            .group_by(oo.c.function_name)
        ).all()
    return list(workflows), list(steps)


def _schedule_output(s: WorkflowSchedule, load_context: bool = True) -> dict[str, Any]:
    return {
        "schedule_id": s["schedule_id"],
        "schedule_name": s["schedule_name"],
        "workflow_name": s["workflow_name"],
        "workflow_class_name": None,
        "schedule": s["schedule"],
        "status": s["status"],
        "context": str(s["context"]) if load_context else None,
        "last_fired_at": None,
        "automatic_backfill": False,
        "cron_timezone": None,
        "queue_name": None,
        "application_name": None,
    }


def _list_schedules(rt: Runtime, msg: dict[str, Any]) -> Fields:
    b = body(msg)
    rows = _schedule_api.list_schedules(
        rt,
        _str_or_list(b, "status"),
        _str_or_list(b, "workflow_name"),
        _str_or_list(b, "schedule_name_prefix"),
    )
    load = bool(field(b, "load_context", bool, True))
    return {"output": [_schedule_output(s, load) for s in rows]}


def _get_schedule(rt: Runtime, msg: dict[str, Any]) -> Fields:
    s = _schedule_api.get_schedule(rt, field(msg, "schedule_name", str))
    load = bool(field(msg, "load_context", bool, True))
    return {"output": _schedule_output(s, load) if s is not None else None}


def _set_schedule(status: str) -> Handler:
    def handler(rt: Runtime, msg: dict[str, Any]) -> Fields:
        _schedule_api.set_schedule_status(rt, field(msg, "schedule_name", str), status)
        return {"success": True}

    return handler


def _backfill_schedule(rt: Runtime, msg: dict[str, Any]) -> Fields:
    name = field(msg, "schedule_name", str)
    start, end = field(msg, "start", str), field(msg, "end", str)
    try:
        begin, finish = datetime.fromisoformat(start), datetime.fromisoformat(end)
    except ValueError:
        raise BadField("fields 'start' and 'end' must be ISO 8601 timestamps") from None
    return {"workflow_ids": _schedule_api.backfill(rt, name, begin, finish)}


def _trigger_schedule(rt: Runtime, msg: dict[str, Any]) -> Fields:
    return {"workflow_id": _schedule_api.trigger(rt, field(msg, "schedule_name", str))}


def _queue_output(q: Queue) -> dict[str, Any]:
    limiter = q.limiter
    return {
        "name": q.name,
        "concurrency": q.concurrency,
        "worker_concurrency": q.worker_concurrency,
        "rate_limit_max": limiter["limit"] if limiter is not None else None,
        "rate_limit_period_sec": limiter["period"] if limiter is not None else None,
        "priority_enabled": q.priority_enabled,
        "partition_queue": q.partition_queue,
        "polling_interval_sec": q.polling_interval_sec,
        "application_name": None,
    }


def _list_queues(_rt: Runtime, _msg: dict[str, Any]) -> Fields:
    return {"output": [_queue_output(q) for q in GLOBAL_QUEUES.all()]}


def _get_queue(_rt: Runtime, msg: dict[str, Any]) -> Fields:
    q = GLOBAL_QUEUES.get(field(msg, "name", str))
    return {"output": _queue_output(q) if q is not None else None}


def _safe_text(codecs: Codecs, data: bytes, fmt: str | None) -> str:
    try:
        return str(codecs.decode(data, fmt))
    except Exception as exc:
        return f"<cannot deserialize: {type(exc).__name__}>"


def _events(rt: Runtime, msg: dict[str, Any]) -> Fields:
    # The query DBOS.get_all_events runs; the reply lists them by key.
    events = _introspect_db.all_events(rt.sysdb, field(msg, "workflow_id", str))
    codecs = rt.sysdb.codecs
    return {"events": [{"key": k, "value": _safe_text(codecs, *events[k])} for k in sorted(events)]}


def _notifications(rt: Runtime, msg: dict[str, Any]) -> Fields:
    rows = _unconsumed(rt.sysdb, field(msg, "workflow_id", str))
    # Spindle deletes a message when recv consumes it: every row left is unconsumed.
    return {
        "notifications": [
            {
                "topic": t,
                "message": _safe_text(rt.sysdb.codecs, m, fmt),
                "created_at_epoch_ms": c,
                "consumed": False,
            }
            for t, m, c, fmt in rows
        ]
    }


@retried
def _unconsumed(sysdb: SystemDatabase, workflow_id: str) -> list[Any]:
    """(topic, message, created_at_epoch_ms) of the messages waiting for ``workflow_id``."""
    n = notifications
    with sysdb.transaction(read=True) as conn:
        return list(
            conn.execute(
                sa.select(n.c.topic, n.c.message, n.c.created_at_epoch_ms, n.c.serialization)
                .where(n.c.destination_uuid == workflow_id)
                .order_by(n.c.created_at_epoch_ms, n.c.message_uuid)
            ).all()
        )


def _thread_dump(rt: Runtime, _msg: dict[str, Any]) -> Fields:
    snap = rt.registry.snapshot(include_foreign=True)
    return {
        "taken_wall": snap.taken_wall,
        "threads": [t.to_dict() for t in snap.threads if t.state.alive],
        "stacks": [s.to_dict() for s in dump_stacks(rt.registry)],
    }


def _shutdown_report(rt: Runtime, _msg: dict[str, Any]) -> Fields:
    timeline = rt.last_timeline
    return {"report": timeline.to_dict() if timeline is not None else None, "final": False}


HANDLERS: dict[str, Handler] = {
    MessageType.ALERT: handle_alert,
    MessageType.EXECUTOR_INFO: _executor_info,
    MessageType.RECOVERY: _recovery,
    MessageType.CANCEL: _cancel,
    MessageType.DELETE: _delete,
    MessageType.RESUME: _resume,
    MessageType.RESTART: _restart,
    MessageType.FORK_WORKFLOW: _fork_workflow,
    MessageType.LIST_WORKFLOWS: _list_workflows,
    MessageType.LIST_QUEUED_WORKFLOWS: _list_queued,
    MessageType.GET_WORKFLOW: _get_workflow,
    MessageType.EXIST_PENDING_WORKFLOWS: _exist_pending,
    MessageType.LIST_STEPS: _list_steps,
    MessageType.RETENTION: _retention,
    MessageType.GET_METRICS: _get_metrics,
    MessageType.LIST_SCHEDULES: _list_schedules,
    MessageType.GET_SCHEDULE: _get_schedule,
    MessageType.PAUSE_SCHEDULE: _set_schedule(PAUSED),
    MessageType.RESUME_SCHEDULE: _set_schedule(ACTIVE),
    MessageType.BACKFILL_SCHEDULE: _backfill_schedule,
    MessageType.TRIGGER_SCHEDULE: _trigger_schedule,
    MessageType.LIST_QUEUES: _list_queues,
    MessageType.GET_QUEUE: _get_queue,
    MessageType.GET_WORKFLOW_EVENTS: _events,
    MessageType.GET_WORKFLOW_NOTIFICATIONS: _notifications,
    MessageType.THREAD_DUMP: _thread_dump,
    MessageType.SHUTDOWN_REPORT: _shutdown_report,
}


def answer(rt: Runtime, text: str | bytes) -> str | None:
    """The reply frame to one received frame (None for a frame that is not a request).

    Never raises: a failing handler becomes a reply with ``error_message``, as DBOS's client
    answers, so one bad request never costs the connection.
    """
    try:
        msg_type, request_id, msg = parse(text)
    except ValueError as exc:
        # Without a request_id there is nothing a conductor could match a reply to.
        logger.warning("spindle: conductor sent a frame that is not a request: %s", exc)
        return None
    handler = HANDLERS.get(msg_type)
    if handler is None:
        if msg_type in UNSUPPORTED:
            return reply(msg_type, request_id, f"Spindle does not support {msg_type!r}")
        logger.warning("spindle: unexpected conductor message type %r", msg_type)
        return reply(msg_type, request_id, UNKNOWN_TYPE_ERROR)
    try:
        fields = handler(rt, msg)
    except BadField as exc:
        return reply(
            msg_type, request_id, f"Bad {msg_type} request: {exc}", **_failure_fields(msg_type)
        )
    except Exception as exc:
        logger.warning("spindle: conductor %s request failed: %s", msg_type, exc)
        return reply(
            msg_type,
            request_id,
            f"Exception encountered when handling {msg_type}: {type(exc).__name__}: {exc}",
            **_failure_fields(msg_type),
        )
    error = fields.pop("error_message", None)
    return reply(msg_type, request_id, error, **fields)


def _failure_fields(msg_type: str) -> Fields:
    """The type's own fields with their failure values, so a reply always has its shape."""
    if msg_type in (MessageType.LIST_WORKFLOWS, MessageType.LIST_QUEUED_WORKFLOWS):
        return {"output": []}
    if msg_type in (
        MessageType.ALERT,
        MessageType.RECOVERY,
        MessageType.CANCEL,
        MessageType.DELETE,
        MessageType.RESUME,
        MessageType.RESTART,
        MessageType.RETENTION,
        MessageType.PAUSE_SCHEDULE,
        MessageType.RESUME_SCHEDULE,
    ):
        return {"success": False}
    if msg_type == MessageType.FORK_WORKFLOW:
        return {"new_workflow_id": None}
    if msg_type == MessageType.EXIST_PENDING_WORKFLOWS:
        return {"exist": False}
    if msg_type == MessageType.GET_METRICS:
        return {"metrics": []}
    return {"output": None}
