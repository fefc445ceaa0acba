"""DBOS's ``Debouncer`` and ``DebouncerClient`` on both backends: calls under one key
coalesce into one DELAYED workflow that runs with the last call's inputs; the timeout caps
the delay; a started workflow is not extended; the client debounces by name."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spindle import (
    DBOS,
    DBOSClient,
    DBOSException,
    DBOSQueueDeduplicatedError,
    Debouncer,
    DebouncerClient,
    Queue,
    SetEnqueueOptions,
    WorkflowStatusString,
)

deb_queue = Queue("debounce-queue", polling_interval_sec=0.05)


@DBOS.workflow()
def deb_echo(value: str) -> str:
    return f"ran {value}"


@DBOS.workflow()
async def deb_echo_async(value: str) -> str:
    return f"async {value}"


@DBOS.workflow()
def deb_waiter(value: str) -> str:
    DBOS.set_event("started", value)
    return f"{value} got {DBOS.recv('go', timeout_seconds=30)}"


@DBOS.workflow()
def deb_from_workflow() -> list[str]:
    debouncer = Debouncer.create(deb_echo, queue=deb_queue)
    return [debouncer.debounce("in-wf", 3600, v).workflow_id for v in ("p", "q")]


def _status(wf_id: str) -> Any:
    status = DBOS.get_workflow_status(wf_id)
    assert status is not None
    return status


def test_debounce_coalesces_and_runs_last_inputs(dbos: type[DBOS]) -> None:
    debouncer = Debouncer.create(deb_echo, queue=deb_queue)
    first = debouncer.debounce("k", 3600, "a")
    assert _status(first.workflow_id).status == WorkflowStatusString.DELAYED.value
    due_first = _status(first.workflow_id).delay_until_epoch_ms
    again = debouncer.debounce("k", 7200, "b")
    assert again.workflow_id == first.workflow_id  # one workflow per debounce window
    status = _status(first.workflow_id)
    assert status.input == (("b",), {})  # the last call's inputs replace the first's
    assert status.delay_until_epoch_ms > due_first  # the window moved with the last call
    other = debouncer.debounce("other-key", 3600, "c")
    assert other.workflow_id != first.workflow_id  # keys are independent
    # Let it fall due now: it runs once, with the last call's inputs.
    DBOS.set_workflow_delay(first.workflow_id, delay_seconds=0)
    assert first.get_result() == "ran b"
    # A finished window is not extended: the next call starts a new workflow.
    fresh = debouncer.debounce("k", 3600, "d")
    assert fresh.workflow_id != first.workflow_id
    for wf in (fresh.workflow_id, other.workflow_id):
        DBOS.cancel_workflow(wf)


def test_debounce_timeout_caps_the_delay(dbos: type[DBOS]) -> None:
    debouncer = Debouncer.create(deb_echo, debounce_timeout_sec=30, queue="debounce-queue")
    handle = debouncer.debounce("t", 3600, "x")
    status = _status(handle.workflow_id)
    assert status.delay_until_epoch_ms - status.created_at <= 30_000
    assert debouncer.debounce("t", 3600, "y").workflow_id == handle.workflow_id
    status = _status(handle.workflow_id)
    # Capped at the first call plus the timeout, however often the window is extended.
    assert status.delay_until_epoch_ms <= status.created_at + 30_000
    DBOS.cancel_workflow(handle.workflow_id)


def test_debounce_short_period_runs_on_internal_queue(dbos: type[DBOS]) -> None:
    handle = Debouncer.create(deb_echo).debounce("q", 0, "now")
    assert handle.get_result() == "ran now"
    assert _status(handle.workflow_id).queue_name == "_dbos_internal_queue"


def test_started_workflow_gives_up_its_key(dbos: type[DBOS]) -> None:
    """A window whose workflow already runs is not extended: the next call opens a new
    window (the running one releases the key, so the new one can be promoted)."""
    debouncer = Debouncer.create(deb_waiter, queue=deb_queue)
    first = debouncer.debounce("w", 0, "one")
    assert DBOS.get_event(first.workflow_id, "started", timeout_seconds=30) == "one"
    second = debouncer.debounce("w", 0, "two")
    assert second.workflow_id != first.workflow_id
    assert DBOS.get_event(second.workflow_id, "started", timeout_seconds=30) == "two"
    for handle in (first, second):
        DBOS.send(handle.workflow_id, "go", "go")
    assert (first.get_result(), second.get_result()) == ("one got go", "two got go")


def test_delayed_workflow_holds_its_deduplication_id(dbos: type[DBOS]) -> None:
    """Migration v8: a DELAYED workflow holds its deduplication ID (as DBOS), which is what
    serialises two racing first debounce calls."""
    with SetEnqueueOptions(deduplication_id="held", delay_seconds=3600):
        held = deb_queue.enqueue(deb_echo, "x")
        with pytest.raises(DBOSQueueDeduplicatedError):
            deb_queue.enqueue(deb_echo, "y")
    DBOS.cancel_workflow(held.workflow_id)


def test_debounce_from_a_workflow_is_checkpointed(dbos: type[DBOS]) -> None:
    """From a workflow, the bounce is a step (as DBOS's) and the enqueue a child: both
    calls name one debounced workflow, which holds the second call's inputs."""
    parent = DBOS.start_workflow(deb_from_workflow)
    first, second = parent.get_result()
    assert first == second
    assert _status(first).input == (("q",), {})
    names = [s["function_name"] for s in DBOS.list_workflow_steps(parent.workflow_id)]
    assert names.count("DBOS.debounce_delayed_workflow") == 2
    DBOS.cancel_workflow(first)


def test_debounce_async(dbos: type[DBOS]) -> None:
    async def go() -> str:
        debouncer = Debouncer.create_async(deb_echo_async, queue=deb_queue)
        await debouncer.debounce_async("a", 3600, "one")
        handle = await debouncer.debounce_async("a", 0, "two")
        return await handle.get_result()

    assert asyncio.run(go()) == "async two"


def test_debounce_errors(dbos: type[DBOS]) -> None:
    debouncer = Debouncer.create(deb_echo, queue=deb_queue)
    with SetEnqueueOptions(deduplication_id="d"), pytest.raises(DBOSException, match="dedup"):
        debouncer.debounce("e", 1, "x")
    with SetEnqueueOptions(delay_seconds=1), pytest.raises(DBOSException, match="delay"):
        debouncer.debounce("e", 1, "x")
    with pytest.raises(DBOSException, match="debounce_period_sec"):
        debouncer.debounce("e", -1, "x")
    with pytest.raises(DBOSException, match="Invalid queue name"):
        Debouncer.create(deb_echo, queue="no-such-queue").debounce("e", 1, "x")
    with pytest.raises(DBOSException, match="debounce_timeout_sec"):
        Debouncer.create(deb_echo, debounce_timeout_sec=0)


def test_debouncer_client(dbos: type[DBOS], db_url: str) -> None:
    client = DBOSClient(system_database_url=db_url)
    try:
        debouncer = DebouncerClient[str](
            client, {"workflow_name": "deb_echo", "queue_name": "debounce-queue"}
        )
        first = debouncer.debounce("c", 3600, "p")
        assert debouncer.debounce("c", 3600, "q").workflow_id == first.workflow_id
        last = debouncer.debounce("c", 0, "r")  # the last call, due now
        assert last.workflow_id == first.workflow_id
        assert last.get_result() == "ran r"
        with pytest.raises(DBOSException, match="dedup"):
            DebouncerClient[str](
                client,
                {"workflow_name": "deb_echo", "queue_name": "q", "deduplication_id": "x"},
            )

        async def go() -> str:
            handle = await debouncer.debounce_async("c2", 0, "s")
            return await handle.get_result()

        assert asyncio.run(go()) == "ran s"
    finally:
        client.destroy()
