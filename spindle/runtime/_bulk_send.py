"""``DBOS.send_bulk``'s one transaction: every message, and the sender's checkpoint when it
is sent from a workflow, commit together or not at all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError

from ._db_retry import retried
from ._errors import DBOSNonExistentWorkflowError
from ._messaging_db import Outcome, checkpoint, is_foreign_key_violation, message_uuid
from ._rows import now_ms
from ._schema import notifications as nt
from ._sysdb import SystemDatabase


def message_rows(
    messages: Sequence[tuple[str, str, bytes]], serialization: str | None = None
) -> list[dict[str, Any]]:
    """The notifications rows of ``(destination, topic, message)`` triples, sent now
    (``serialization``: the messages' format, None for native pickle)."""
    now = now_ms()
    return [
        {
            "destination_uuid": dest,
            "topic": topic,
            "message": data,
            "created_at_epoch_ms": now,
            "message_uuid": message_uuid(),
            "serialization": serialization,
        }
        for dest, topic, data in messages
    ]


@retried
def send_many(
    sysdb: SystemDatabase,
    messages: Sequence[tuple[str, str, bytes]],
    *,
    workflow_id: str | None = None,
    function_id: int | None = None,
    serialization: str | None = None,
) -> Outcome:
    """Insert ``(destination, topic, message)`` rows (``serialization``: the messages'
    format) in one transaction, with the checkpoint ``DBOS.send_bulk`` of ``workflow_id``
    when given.

    Raises :class:`DBOSNonExistentWorkflowError` naming the destinations when one does not
    exist; then nothing is written.
    """
    rows = message_rows(messages, serialization)

    class _NotPending(Exception):
        pass

    try:
        with sysdb.transaction() as conn:
            if (
                workflow_id is not None
                and function_id is not None
                and not checkpoint(conn, workflow_id, function_id, "DBOS.send_bulk", None)
            ):
                raise _NotPending
            if rows:
                conn.execute(nt.insert(), rows)
    except _NotPending:
        return "not-pending"
    except IntegrityError as exc:
        if is_foreign_key_violation(exc):
            dests = ", ".join(sorted({m[0] for m in messages}))
            raise DBOSNonExistentWorkflowError("`send` destination", dests) from exc
        return "conflict"
    return "recorded"
