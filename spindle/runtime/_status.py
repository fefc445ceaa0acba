"""``WorkflowStatus``: what ``get_status`` and ``list_workflows`` return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._rows import StatusRow
from ._serialization import deserialize, deserialize_exception


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """One workflow's status, as DBOS Transact names its fields."""

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
    recovery_attempts: int
    parent_workflow_id: str | None
    workflow_timeout_ms: int | None
    workflow_deadline_epoch_ms: int | None
    queue_name: str | None
    queue_partition_key: str | None = None

    @classmethod
    def from_row(cls, row: StatusRow, *, load_input: bool = True) -> WorkflowStatus:
        """Build from a database row; inputs and outputs are deserialized."""
        return cls(
            workflow_id=row.workflow_id,
            status=row.status,
            name=row.name,
            input=_safe(deserialize, row.inputs) if load_input else None,
            output=_safe(deserialize, row.output),
            error=deserialize_exception(row.error) if row.error is not None else None,
            executor_id=row.executor_id,
            app_version=row.application_version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            recovery_attempts=row.recovery_attempts,
            parent_workflow_id=row.parent_workflow_id,
            workflow_timeout_ms=row.workflow_timeout_ms,
            workflow_deadline_epoch_ms=row.workflow_deadline_epoch_ms,
            queue_name=row.queue_name,
            queue_partition_key=row.queue_partition_key,
        )


def _safe(fn: Any, data: bytes | None) -> Any:
    # A row written by code this process cannot import still lists; show why instead.
    try:
        return fn(data)
    except Exception as exc:
        return f"<cannot deserialize: {type(exc).__name__}: {exc}>"
