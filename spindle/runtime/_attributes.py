"""DBOS's workflow attributes: custom JSON key-values on a workflow, set at creation by
``SetWorkflowAttributes`` (not inherited by children), replaced by
``DBOS.update_workflow_attributes``, shown in ``WorkflowStatus.attributes`` and matched by
``list_workflows(attributes=...)`` (containment, PostgreSQL only, as DBOS).

Set after the creating insert, in its own short statement and only when a block asks for it:
the insert of every other workflow stays as it was.
"""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from ._context import current_workflow
from ._db_retry import retried
from ._errors import DBOSException, DBOSNonExistentWorkflowError
from ._rows import now_ms
from ._schema import workflow_status as ws

if TYPE_CHECKING:
    from ._sysdb import SystemDatabase


def validate(attributes: Any) -> None:
    """DBOS's check: a JSON-serializable dict, or None."""
    if attributes is not None and not isinstance(attributes, dict):
        raise DBOSException(f"Invalid workflow attributes {attributes}. Attributes must be a dict.")
    if attributes is not None:
        try:
            json.dumps(attributes)
        except (TypeError, ValueError) as exc:
            raise DBOSException(
                f"Invalid workflow attributes {attributes}. Attributes must be JSON-serializable."
            ) from exc


#: DBOS's attribute carrying a propagated trace context (``PropagateOtelContext``). DBOS
#: keeps that carrier apart from the attributes, so an inner ``SetWorkflowAttributes``
#: block keeps it too.
OTEL_CARRIER_ATTRIBUTE = "dbos.otelContext"


@dataclass(frozen=True, slots=True)
class _Block:
    values: dict[str, Any] | None
    #: The workflow the block was opened in (None: outside one): workflows started by a
    #: child's body (another workflow) do not inherit the attributes.
    owner: str | None


_next: contextvars.ContextVar[_Block | None] = contextvars.ContextVar(
    "spindle_next_attributes", default=None
)


class SetWorkflowAttributes:
    """Attach ``attributes`` to the workflows started or enqueued in this block (DBOS)."""

    def __init__(self, attributes: dict[str, Any] | None) -> None:
        validate(attributes)
        self.attributes = attributes
        self._token: contextvars.Token[_Block | None] | None = None

    def __enter__(self) -> Self:
        ctx = current_workflow.get()
        owner = ctx.workflow_id if ctx is not None else None
        values = self.attributes
        outer = for_new_workflow()
        if outer is not None and OTEL_CARRIER_ATTRIBUTE in outer:
            values = {OTEL_CARRIER_ATTRIBUTE: outer[OTEL_CARRIER_ATTRIBUTE], **(values or {})}
        self._token = _next.set(_Block(values, owner))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _next.reset(self._token)


def for_new_workflow() -> dict[str, Any] | None:
    """The attributes a workflow created now gets (None: none asked for)."""
    block = _next.get()
    if block is None:
        return None
    ctx = current_workflow.get()
    owner = ctx.workflow_id if ctx is not None else None
    return block.values if block.owner == owner else None


@retried
def store(sysdb: SystemDatabase, workflow_id: str, attributes: dict[str, Any] | None) -> bool:
    """Replace a workflow's attributes (None clears them); False if it does not exist."""
    text = json.dumps(attributes) if attributes is not None else None
    with sysdb.transaction() as conn:
        return (
            conn.execute(
                ws.update()
                .where(ws.c.workflow_uuid == workflow_id)
                .values(attributes=text, updated_at=now_ms())
            ).rowcount
            == 1
        )


def replace(sysdb: SystemDatabase, workflow_id: str, attributes: dict[str, Any] | None) -> None:
    """``update_workflow_attributes`` (of ``DBOS`` and ``DBOSClient``): validate, replace,
    and raise DBOS's error for an unknown workflow."""
    validate(attributes)
    if not store(sysdb, workflow_id, attributes):
        raise DBOSNonExistentWorkflowError(workflow_id)


def load(text: str | None) -> dict[str, Any] | None:
    """The attributes column as a dict."""
    return json.loads(text) if text is not None else None


def contains(attributes: dict[str, Any], *, sqlite: bool) -> sa.ColumnElement[bool]:
    """Workflows whose attributes contain every given key/value (JSONB ``@>``)."""
    validate(attributes)
    if sqlite:
        # As DBOS: SQLite's JSON functions cannot reproduce JSONB containment faithfully.
        raise DBOSException(
            "Filtering workflows by attributes is not supported on SQLite. "
            "Use a Postgres system database to filter by attributes."
        )
    return sa.cast(ws.c.attributes, JSONB).contains(attributes)
