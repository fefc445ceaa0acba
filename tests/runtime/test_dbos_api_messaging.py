"""DBOS 2.30's messaging and queue names on both backends: send(idempotency_key=),
send_bulk, get_all_events, enqueue_workflow, retrieve_queue, list_queues."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import (
    DBOS,
    DBOSException,
    DBOSNonExistentWorkflowError,
    EnqueueOptions,
    Queue,
    SendMessage,
    SetEnqueueOptions,
    SetWorkflowAttributes,
    SetWorkflowID,
)
from spindle.runtime._schema import notifications
from tests.conftest import MakeDBOS

WAIT = 10.0
SHORT = 0.2  # a recv that must find nothing waits this long

api_queue = Queue("api-queue")
fast_queue = Queue("api-fast-queue", polling_interval_sec=0.5)  # delays are due per poll


@DBOS.workflow()
def api_inbox(n: int, topic: str | None, timeout: float) -> list[Any]:
    return [DBOS.recv(topic, timeout_seconds=timeout) for _ in range(n)]


@DBOS.workflow()
def api_bulk_sender(dests: list[str]) -> None:
    DBOS.send_bulk([SendMessage(d, f"hi {d}", "t") for d in dests])


@DBOS.workflow()
def api_events() -> None:
    DBOS.set_event("a", 1)
    DBOS.set_event("b", {"x": [2]})
    DBOS.set_event("a", 3)


@DBOS.workflow()
def api_queued(x: int) -> int:
    return x * 10


def _waiting_messages(destination: str) -> int:
    with DBOS.runtime.sysdb.transaction(read=True) as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(notifications.c.destination_uuid == destination)
            ).scalar_one()
        )


def _started(wf_id: str, n: int, timeout: float = WAIT) -> Any:
    with SetWorkflowID(wf_id):
        return DBOS.start_workflow(api_inbox, n, None, timeout)


def test_send_with_idempotency_key_is_once(dbos: type[DBOS]) -> None:
    """Outside a workflow, sends with one idempotency key deliver one message, even when
    repeated after the first was received (as DBOS's temporary send workflow)."""
    inbox = _started("inbox", 2, SHORT)
    with SetWorkflowID("for-the-next-workflow"):
        DBOS.send("inbox", "once", idempotency_key="k1")  # leaves SetWorkflowID alone
        assert DBOS.start_workflow(api_queued, 1).workflow_id == "for-the-next-workflow"
    DBOS.send("inbox", "once", idempotency_key="k1")
    assert inbox.get_result() == ["once", None]
    second = _started("inbox-2", 1, SHORT)
    DBOS.send("inbox-2", "x", idempotency_key="k2")
    assert second.get_result() == ["x"]
    DBOS.send("inbox-2", "x", idempotency_key="k2")  # already sent and received
    assert _waiting_messages("inbox-2") == 0
    assert DBOS.get_workflow_status("k2::inbox-2").status == "SUCCESS"  # type: ignore[union-attr]


def test_send_async_with_key(dbos: type[DBOS]) -> None:
    """send_async takes the same idempotency key."""
    inbox = _started("inbox-a", 2, SHORT)

    async def main() -> None:
        await DBOS.send_async("inbox-a", 1, idempotency_key="ka")
        await DBOS.send_async("inbox-a", 1, idempotency_key="ka")

    asyncio.run(main())
    assert inbox.get_result() == [1, None]


def test_send_bulk(dbos: type[DBOS]) -> None:
    """send_bulk delivers every message; from a workflow it is exactly once (one step);
    a missing destination sends none; duplicated keys are refused."""
    a, b = _started("bulk-a", 1), _started("bulk-b", 2, SHORT)
    DBOS.send_bulk([SendMessage("bulk-a", "to a"), SendMessage("bulk-b", "to b")])
    assert a.get_result() == ["to a"]
    assert b.get_result() == ["to b", None]
    c = _started("bulk-c", 1, SHORT)
    with pytest.raises(DBOSNonExistentWorkflowError, match="Non-existent `send` destination"):
        DBOS.send_bulk([SendMessage("bulk-c", 1), SendMessage("nobody", 2)])
    assert c.get_result() == [None]  # one transaction: nothing reached bulk-c either
    with pytest.raises(DBOSException, match="duplicate idempotency keys: k"):
        DBOS.send_bulk([SendMessage("bulk-a", 1, idempotency_key="k")] * 2)

    c = DBOS.start_workflow(api_inbox, 1, "t", WAIT)  # a new inbox
    with SetWorkflowID("bulk-sender"):
        api_bulk_sender([c.workflow_id])
    assert c.get_result() == [f"hi {c.workflow_id}"]
    (step,) = DBOS.list_workflow_steps("bulk-sender")
    assert step["function_name"] == "DBOS.send_bulk"
    asyncio.run(DBOS.send_bulk_async([]))


def test_get_all_events(dbos: type[DBOS]) -> None:
    """get_all_events: every event's latest value by key; none for an unknown workflow."""
    with SetWorkflowID("ev"):
        api_events()
    assert DBOS.get_all_events("ev") == {"a": 3, "b": {"x": [2]}}
    assert asyncio.run(DBOS.get_all_events_async("ev")) == {"a": 3, "b": {"x": [2]}}
    assert DBOS.get_all_events("nobody") == {}


def test_enqueue_by_queue_name(dbos: type[DBOS]) -> None:
    """enqueue_workflow(queue_name, fn, ...) enqueues on the declared queue; an undeclared
    name raises; retrieve_queue of an unknown name is None; list_queues lists them."""
    with SetWorkflowAttributes({"via": "queue"}):
        handle = DBOS.enqueue_workflow("api-queue", api_queued, 4)
    assert handle.get_result() == 40
    assert handle.get_status().attributes == {"via": "queue"}
    assert DBOS.get_workflow_status(handle.workflow_id).queue_name == "api-queue"  # type: ignore[union-attr]

    async def main() -> Any:
        h = await DBOS.enqueue_workflow_async("api-queue", api_queued, 5)
        return await h.get_result()

    assert asyncio.run(main()) == 50
    with pytest.raises(DBOSException, match="Queue nowhere is not registered"):
        DBOS.enqueue_workflow("nowhere", api_queued, 1)
    assert DBOS.retrieve_queue("api-queue") is api_queue
    assert DBOS.retrieve_queue("nowhere") is None
    assert asyncio.run(DBOS.retrieve_queue_async("nowhere")) is None
    assert api_queue in DBOS.list_queues()
    assert DBOS.list_queues(application_name="another-app") == []
    assert api_queue in asyncio.run(DBOS.list_queues_async(application_name="spindle-test"))


def test_delayed_enqueue(dbos: type[DBOS]) -> None:
    """SetEnqueueOptions(delay_seconds=): the workflow is DELAYED until due, then runs from
    its queue; set_workflow_delay moves the due time; a DELAYED workflow can be cancelled."""
    with SetEnqueueOptions(delay_seconds=3600):
        later = fast_queue.enqueue(api_queued, 1)
    status = DBOS.get_workflow_status(later.workflow_id)
    assert status is not None
    assert (status.status, status.recovery_attempts) == ("DELAYED", 0)
    assert status.delay_until_epoch_ms is not None
    assert [w.workflow_id for w in DBOS.list_queued_workflows()] == [later.workflow_id]
    DBOS.set_workflow_delay(later.workflow_id, delay_seconds=0)
    assert later.get_result() == 10
    with SetEnqueueOptions(delay_seconds=0.05):
        soon = fast_queue.enqueue(api_queued, 2)
    assert soon.get_result() == 20  # due after one poll of the queue
    with SetEnqueueOptions(delay_seconds=3600):
        parked = fast_queue.enqueue(api_queued, 3)
    DBOS.cancel_workflow(parked.workflow_id)
    assert DBOS.get_workflow_status(parked.workflow_id).status == "CANCELLED"  # type: ignore[union-attr]
    DBOS.set_workflow_delay(later.workflow_id, delay_until_epoch_ms=0)  # not DELAYED: no-op
    with pytest.raises(DBOSException, match="either delay_seconds or delay_until_epoch_ms"):
        DBOS.set_workflow_delay(later.workflow_id)
    with pytest.raises(ValueError, match="delay_seconds"):
        SetEnqueueOptions(delay_seconds=-1)


def test_enqueue_with_app_version(dbos: type[DBOS]) -> None:
    """SetEnqueueOptions(app_version=): only a process of that version dequeues it."""
    with SetEnqueueOptions(app_version="v-other"):
        handle = fast_queue.enqueue(api_queued, 1)
    assert fast_queue.enqueue(api_queued, 2).get_result() == 20  # the queue was drained
    status = DBOS.get_workflow_status(handle.workflow_id)
    assert status is not None
    assert (status.status, status.app_version) == ("ENQUEUED", "v-other")
    DBOS.cancel_workflow(handle.workflow_id)


zero_queue = Queue("api-zero-queue", worker_concurrency=0)
other_queue = Queue("api-other-queue")


def test_listen_queues_and_zero_worker_share(make_dbos: MakeDBOS) -> None:
    """listen_queues before launch: this process dequeues only from those queues (no worker
    for the others); after launch, or twice, it raises. worker_concurrency=0 is accepted
    (as DBOS): this process enqueues to the queue but never runs its workflows."""
    make_dbos()
    DBOS.listen_queues([fast_queue, "api-zero-queue"])
    with pytest.raises(DBOSException, match="more than once"):
        DBOS.listen_queues([fast_queue])
    DBOS.launch()
    with pytest.raises(DBOSException, match="after DBOS is launched"):
        DBOS.listen_queues([other_queue])
    workers = set(DBOS.runtime.queues.worker_threads())
    assert {"api-fast-queue", "api-zero-queue"} <= workers
    assert "api-other-queue" not in workers
    parked = other_queue.enqueue(api_queued, 1)
    unrun = zero_queue.enqueue(api_queued, 2)
    assert fast_queue.enqueue(api_queued, 3).get_result() == 30
    for handle in (parked, unrun):
        assert DBOS.get_workflow_status(handle.workflow_id).status == "ENQUEUED"  # type: ignore[union-attr]
    DBOS.cancel_workflows([parked.workflow_id, unrun.workflow_id])


def test_enqueue_workflow_with_options(dbos: type[DBOS]) -> None:
    """enqueue_workflow_with_options: by name, without the function; the row has no app
    version unless given (anyone's to run); an ID makes it idempotent; unknown keys raise."""
    options: EnqueueOptions = {
        "workflow_name": "api_queued",
        "queue_name": "api-queue",
        "workflow_id": "by-name",
    }
    handle = DBOS.enqueue_workflow_with_options({**options, "attributes": {"k": "v"}}, 6)
    assert handle.get_result() == 60
    assert handle.get_status().attributes == {"k": "v"}
    status = DBOS.get_workflow_status("by-name")
    assert status is not None
    assert (status.queue_name, status.app_version) == ("api-queue", None)
    assert DBOS.enqueue_workflow_with_options(options, 6).get_result() == 60  # same ID
    with pytest.raises(DBOSException, match="Invalid priority 0"):
        DBOS.enqueue_workflow_with_options({**options, "priority": 0})
    with pytest.raises(DBOSException, match="'class_name' is not supported"):
        DBOS.enqueue_workflow_with_options({**options, "class_name": "C"})  # type: ignore[typeddict-unknown-key]

    async def main() -> Any:
        h = await DBOS.enqueue_workflow_with_options_async(
            {"workflow_name": "api_queued", "queue_name": "api-queue"}, 7
        )
        return await h.get_result()

    assert asyncio.run(main()) == 70


def test_enqueue_options_outside_an_enqueue_raise(dbos: type[DBOS]) -> None:
    """As DBOS: SetEnqueueOptions around a workflow that is started, not enqueued, raises
    (its options would do nothing); around an enqueue they apply."""
    with (
        SetEnqueueOptions(deduplication_id="d"),
        pytest.raises(
            DBOSException, match="deduplication_id set on a workflow that is not being enqueued"
        ),
    ):
        DBOS.start_workflow(api_queued, 1)
    with SetEnqueueOptions(delay_seconds=1), pytest.raises(DBOSException, match="delay_seconds"):
        api_queued(1)
    with SetEnqueueOptions(app_version="0"):  # not an enqueue-only option in DBOS either
        assert api_queued(2) == 20
