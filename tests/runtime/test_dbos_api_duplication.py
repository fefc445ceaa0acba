"""DBOS 2.30's DuplicationPolicy on both backends: "reject" (the default) raises on a held
deduplication ID; "return-existing" hands back the holder, in SetEnqueueOptions,
EnqueueOptions (enqueue_workflow_with_options) and DBOSClient.enqueue."""

from __future__ import annotations

import pytest

from spindle import (
    DBOS,
    DBOSClient,
    DBOSException,
    DBOSQueueDeduplicatedError,
    Queue,
    SetEnqueueOptions,
)

dup_queue = Queue("dup-queue", polling_interval_sec=0.1)


@DBOS.workflow()
def dup_waiter(tag: str) -> str:
    DBOS.set_event("started", True)
    return f"{tag}:{DBOS.recv('go', timeout_seconds=30)}"


def test_duplication_policies(dbos: type[DBOS], db_url: str) -> None:
    with SetEnqueueOptions(deduplication_id="d-1"):
        first = dup_queue.enqueue(dup_waiter, "first")
    assert DBOS.get_event(first.workflow_id, "started", 30) is True  # PENDING: holds "d-1"
    with SetEnqueueOptions(deduplication_id="d-1"), pytest.raises(DBOSQueueDeduplicatedError):
        dup_queue.enqueue(dup_waiter, "second")
    with SetEnqueueOptions(deduplication_id="d-1", duplication_policy="return-existing"):
        again = dup_queue.enqueue(dup_waiter, "third")
    assert again.workflow_id == first.workflow_id
    by_name = DBOS.enqueue_workflow_with_options(
        {
            "workflow_name": "dup_waiter",
            "queue_name": "dup-queue",
            "deduplication_id": "d-1",
            "duplication_policy": "return-existing",
        },
        "fourth",
    )
    assert by_name.workflow_id == first.workflow_id
    client = DBOSClient(system_database_url=db_url)
    try:
        from_client = client.enqueue(
            {
                "workflow_name": "dup_waiter",
                "queue_name": "dup-queue",
                "deduplication_id": "d-1",
                "duplication_policy": "return-existing",
            },
            "fifth",
        )
        assert from_client.workflow_id == first.workflow_id
    finally:
        client.destroy()
    DBOS.send(first.workflow_id, "go", "go")
    assert again.get_result() == "first:go"  # the holder's arguments, not the new ones


def test_policy_checks(dbos: type[DBOS]) -> None:
    with pytest.raises(DBOSException, match="Invalid duplication_policy maybe"):
        SetEnqueueOptions(deduplication_id="x", duplication_policy="maybe")  # type: ignore[arg-type]
    with pytest.raises(DBOSException, match="requires a deduplication_id"):
        SetEnqueueOptions(duplication_policy="return-existing")
