"""DBOS's conductor protocol on the wire: message types, parsing, replies, output objects.

JSON text frames. Every request carries ``type`` and ``request_id``; every reply repeats
both and carries ``error_message`` (None on success) next to the type's own fields. The
field names are DBOS 2.30's (``WorkflowUUID``, ``Status``, ...): the wire format is the
contract a conductor relies on. Spindle adds two types of its own, ``thread_dump`` and
``shutdown_report``, which a DBOS conductor never sends.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from ._status import WorkflowStatus


class MessageType(StrEnum):
    """Every message type of DBOS 2.30's conductor protocol, and Spindle's two."""

    EXECUTOR_INFO = "executor_info"
    RECOVERY = "recovery"
    CANCEL = "cancel"
    DELETE = "delete"
    RESUME = "resume"
    RESTART = "restart"
    FORK_WORKFLOW = "fork_workflow"
    LIST_WORKFLOWS = "list_workflows"
    LIST_QUEUED_WORKFLOWS = "list_queued_workflows"
    GET_WORKFLOW = "get_workflow"
    EXIST_PENDING_WORKFLOWS = "exist_pending_workflows"
    LIST_STEPS = "list_steps"
    RETENTION = "retention"
    GET_METRICS = "get_metrics"
    ALERT = "alert"
    EXPORT_WORKFLOW = "export_workflow"
    IMPORT_WORKFLOW = "import_workflow"
    LIST_SCHEDULES = "list_schedules"
    GET_SCHEDULE = "get_schedule"
    PAUSE_SCHEDULE = "pause_schedule"
    RESUME_SCHEDULE = "resume_schedule"
    BACKFILL_SCHEDULE = "backfill_schedule"
    TRIGGER_SCHEDULE = "trigger_schedule"
    LIST_APPLICATION_VERSIONS = "list_application_versions"
    SET_LATEST_APPLICATION_VERSION = "set_latest_application_version"
    GET_WORKFLOW_EVENTS = "get_workflow_events"
    GET_WORKFLOW_NOTIFICATIONS = "get_workflow_notifications"
    GET_WORKFLOW_STREAMS = "get_workflow_streams"
    GET_WORKFLOW_AGGREGATES = "get_workflow_aggregates"
    GET_STEP_AGGREGATES = "get_step_aggregates"
    FORK_FROM_FAILURE = "fork_from_failure"
    LIST_QUEUES = "list_queues"
    GET_QUEUE = "get_queue"
    REWIND_WORKFLOW = "rewind_workflow"
    # Spindle's own: the thread registry with stacks, and the last shutdown timeline.
    THREAD_DUMP = "thread_dump"
    SHUTDOWN_REPORT = "shutdown_report"


#: DBOS's reply to a type it does not know (the connection stays open).
UNKNOWN_TYPE_ERROR = "Unknown message type"


class ProtocolError(ValueError):
    """A frame that is not a request: not JSON, not an object, or without type/request_id."""


class BadField(ValueError):
    """A request whose field is missing or of the wrong type (answered with an error)."""


def parse(text: str | bytes) -> tuple[str, str, dict[str, Any]]:
    """``(type, request_id, message)`` of one frame; raises :class:`ProtocolError`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"the frame is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("the frame is not a JSON object")
    msg_type, request_id = data.get("type"), data.get("request_id")
    if not isinstance(msg_type, str) or not isinstance(request_id, str):
        raise ProtocolError("the frame has no string 'type' and 'request_id'")
    return msg_type, request_id, data


def reply(msg_type: str, request_id: str, error_message: str | None = None, **fields: Any) -> str:
    """One reply frame: the request's type and id, the fields, and ``error_message``."""
    return json.dumps(
        {"type": msg_type, "request_id": request_id, **fields, "error_message": error_message},
        default=str,
    )


def field(msg: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """``msg[key]`` checked against ``kind`` (required unless a default is given)."""
    if key not in msg or msg[key] is None:
        if default is ...:
            raise BadField(f"missing field {key!r}")
        return default
    value = msg[key]
    if isinstance(value, bool) and kind is not bool:
        raise BadField(f"field {key!r} must be {_names(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise BadField(f"field {key!r} must be {_names(kind)}, got {type(value).__name__}")
    return value


def body(msg: dict[str, Any]) -> dict[str, Any]:
    """The ``body`` object of a request (an empty one when absent)."""
    value = field(msg, "body", dict, {})
    assert isinstance(value, dict)
    return value


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def workflow_output(s: WorkflowStatus) -> dict[str, Any]:
    """A workflow as DBOS's ``WorkflowsOutput``: every field present, values as strings."""
    return {
        "WorkflowUUID": s.workflow_id,
        "Status": s.status,
        "WorkflowName": s.name,
        "WorkflowClassName": None,
        "WorkflowConfigName": None,
        "AuthenticatedUser": None,
        "AssumedRole": None,
        "AuthenticatedRoles": None,
        "Input": _opt_str(s.input),
        "Output": _opt_str(s.output),
        "Error": _opt_str(s.error),
        "CreatedAt": _opt_str(s.created_at),
        "UpdatedAt": _opt_str(s.updated_at),
        "QueueName": s.queue_name,
        "ApplicationVersion": s.app_version,
        "ExecutorID": s.executor_id,
        "WorkflowTimeoutMS": _opt_str(s.workflow_timeout_ms),
        "WorkflowDeadlineEpochMS": _opt_str(s.workflow_deadline_epoch_ms),
        "DeduplicationID": None,
        "Priority": None,
        "QueuePartitionKey": s.queue_partition_key,
        "ForkedFrom": None,
        "WasForkedFrom": False,
        "ParentWorkflowID": s.parent_workflow_id,
        "DequeuedAt": None,
        "DelayUntilEpochMS": None,
        "CompletedAt": None,
        "Attributes": None,
        "ScheduleName": None,
        "ApplicationName": None,
    }


def step_output(step: dict[str, Any]) -> dict[str, Any]:
    """A recorded step as DBOS's ``WorkflowSteps`` (times in epoch ms, as strings)."""
    return {
        "function_id": step["function_id"],
        "function_name": step["function_name"],
        "output": step.get("output"),
        "error": step.get("error"),
        "child_workflow_id": step.get("child_workflow_id"),
        "started_at_epoch_ms": _opt_str(step.get("started_at_epoch_ms")),
        "completed_at_epoch_ms": _opt_str(step.get("completed_at_epoch_ms")),
    }
