"""DBOS's ``DuplicationPolicy`` for an enqueue whose deduplication ID is held: ``"reject"``
(the default: ``DBOSQueueDeduplicatedError``) or ``"return-existing"`` (the ID of the
workflow holding it, whose handle the caller then gets; the new arguments are dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import sqlalchemy as sa

from ._db_retry import retried
from ._errors import DBOSException, DBOSQueueDeduplicatedError
from ._rows import ENQUEUED, PENDING
from ._schema import workflow_status as ws
from ._sysdb import SystemDatabase

DuplicationPolicy = Literal["reject", "return-existing"]
T = TypeVar("T")


def check_policy(policy: str | None, queue_name: str | None, deduplication_id: str | None) -> None:
    """DBOS's checks (and texts): a known policy; "return-existing" needs both a queue and a
    deduplication ID to attach to."""
    if policy is None or policy == "reject":
        return
    if policy != "return-existing":
        raise DBOSException(
            f"Invalid duplication_policy {policy}. Must be either 'reject' or 'return-existing'."
        )
    if queue_name is None:
        raise DBOSException(
            "duplication_policy 'return-existing' requires a queue. It is only supported "
            "when enqueueing a workflow onto a queue."
        )
    if deduplication_id is None:
        raise DBOSException("duplication_policy 'return-existing' requires a deduplication_id.")


@retried
def _holder(sysdb: SystemDatabase, queue_name: str, deduplication_id: str) -> str | None:
    with sysdb.transaction(read=True) as conn:
        found = conn.execute(
            sa.select(ws.c.workflow_uuid).where(
                ws.c.queue_name == queue_name,
                ws.c.deduplication_id == deduplication_id,
                ws.c.status.in_((ENQUEUED, PENDING)),  # the unique index's rows
            )
        ).scalar_one_or_none()
    return None if found is None else str(found)


def enqueue_or_holder(
    sysdb: SystemDatabase,
    policy: str | None,
    queue_name: str,
    deduplication_id: str | None,
    enqueue: Callable[[], T],
) -> tuple[T | None, str | None]:
    """``(enqueue(), None)``, or with "return-existing" on a held ID ``(None, holder's
    ID)``. The holder may leave the queue between the conflict and the lookup: then the
    ID is free and the enqueue is tried again."""
    while True:
        try:
            return enqueue(), None
        except DBOSQueueDeduplicatedError:
            if policy != "return-existing" or deduplication_id is None:
                raise
            holder = _holder(sysdb, queue_name, deduplication_id)
            if holder is not None:
                return None, holder
