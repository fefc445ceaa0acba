"""``WorkflowStatus``: what ``get_workflow_status`` and ``list_workflows`` return, with every
field of DBOS Transact 2.30's ``WorkflowStatus``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ._attributes import load as load_attributes
from ._classes import split_input
from ._identity_columns import IDENTITY_COLUMNS, roles_of
from ._roles import split_auth
from ._rows import DELAYED, ENQUEUED, TERMINAL, StatusRow
from ._serialization import Codecs


class WorkflowStatusString(Enum):
    """The values of ``WorkflowStatus.status`` (DBOS's enum)."""

    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    CANCELLED = "CANCELLED"
    ENQUEUED = "ENQUEUED"
    DELAYED = "DELAYED"


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """One workflow's status, as DBOS Transact names its fields (timestamps in epoch ms).

    ``class_name``/``config_name`` and the user, roles and assumed role are columns of
    the row (migration v9), so they show without the input too. Spindle records no owning
    application: None, as it is in DBOS for a workflow that has none.
    """

    workflow_id: str
    status: str
    name: str
    input: Any
    output: Any
    error: BaseException | None
    executor_id: str
    app_version: str | None
    created_at: int
    updated_at: int
    #: Times this workflow was started, counting its first run, as DBOS counts them.
    recovery_attempts: int
    parent_workflow_id: str | None
    workflow_timeout_ms: int | None
    workflow_deadline_epoch_ms: int | None
    queue_name: str | None
    queue_partition_key: str | None = None
    class_name: str | None = None
    config_name: str | None = None
    authenticated_user: str | None = None
    assumed_role: str | None = None
    authenticated_roles: list[str] | None = None
    deduplication_id: str | None = None
    priority: int | None = None
    forked_from: str | None = None
    was_forked_from: bool = False
    dequeued_at: int | None = None
    delay_until_epoch_ms: int | None = None
    completed_at: int | None = None
    attributes: dict[str, Any] | None = None
    schedule_name: str | None = None
    application_name: str | None = None
    app_id: str | None = None

    @classmethod
    def from_row(
        cls,
        row: StatusRow,
        codecs: Codecs,
        *,
        load_input: bool = True,
        load_output: bool = True,
        was_forked_from: bool = False,
    ) -> WorkflowStatus:
        """Build from a database row; inputs and outputs are deserialized when loaded, by
        the codec of the row's format."""
        # A detail row (see _introspect_db) also carries the queue and fork columns.
        extra: dict[str, Any] = {
            name: getattr(row, column)
            for name, column in (
                ("deduplication_id", "deduplication_id"),
                ("priority", "priority"),
                ("forked_from", "forked_from"),
                ("dequeued_at", "started_at_epoch_ms"),
                ("delay_until_epoch_ms", "delay_until_epoch_ms"),
            )
            if hasattr(row, column)
        }
        if hasattr(row, "attributes"):
            extra["attributes"] = load_attributes(row.attributes)
        # A method's self/cls is stored as its class and config name (see _classes).
        value, class_name, config_name = (
            split_input(_safe(lambda d: codecs.inputs(d, row.serialization), row.inputs))
            if load_input
            else (None, None, None)
        )
        # So is the identity it was started with (see _roles).
        value, auth = split_auth(value)
        identity: dict[str, Any] = {
            "class_name": class_name,
            "config_name": config_name,
            "authenticated_user": auth.user if auth is not None else None,
            "assumed_role": auth.assumed_role if auth is not None else None,
            "authenticated_roles": (
                list(auth.roles) if auth is not None and auth.roles is not None else None
            ),
        }
        if hasattr(row, "authenticated_roles"):
            # A detail row has the identity columns (migration v10): they answer without
            # the input; a row written before them has NULLs, and keeps the input's.
            columns = {name: getattr(row, name) for name in IDENTITY_COLUMNS}
            columns["authenticated_roles"] = roles_of(columns["authenticated_roles"])
            for name, column in columns.items():
                if column is not None:
                    identity[name] = column
        return cls(
            workflow_id=row.workflow_id,
            status=row.status,
            name=row.name,
            input=value,
            **identity,
            output=_safe(lambda d: codecs.decode(d, row.serialization), row.output)
            if load_output
            else None,
            error=_safe(lambda d: codecs.decode_error(d, row.serialization), row.error)
            if load_output and row.error is not None
            else None,
            executor_id=row.executor_id,
            app_version=row.application_version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            # Spindle's column counts the re-runs; DBOS's counts the first run too (a
            # workflow still in its queue has not run).
            recovery_attempts=row.recovery_attempts + (row.status not in (ENQUEUED, DELAYED)),
            parent_workflow_id=row.parent_workflow_id,
            workflow_timeout_ms=row.workflow_timeout_ms,
            workflow_deadline_epoch_ms=row.workflow_deadline_epoch_ms,
            queue_name=row.queue_name,
            queue_partition_key=row.queue_partition_key,
            was_forked_from=was_forked_from,
            # Nothing writes a finished workflow's row again: its last update is its end.
            completed_at=row.updated_at if row.status in TERMINAL else None,
            **extra,
        )


def _safe(fn: Any, data: bytes | None) -> Any:
    # A row written by code this process cannot import still lists; show why instead.
    try:
        return fn(data)
    except Exception as exc:
        return f"<cannot deserialize: {type(exc).__name__}: {exc}>"
