"""DBOS 2.30's DBOS.delete_queue, DBOS.reset_system_database and DBOS.alert_handler, on
both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from spindle import DBOS, DBOSException, Queue, SetWorkflowID
from spindle.runtime import _alerts
from tests.conftest import MakeDBOS
from tests.runtime.conductor_server import LoopbackConductor


@DBOS.workflow()
def admin_members_wf(x: int) -> int:
    return x + 1


def test_delete_queue_stops_its_worker_and_keeps_its_workflows_for_a_redeclaration(
    dbos: type[DBOS],
) -> None:
    queue = Queue("delq-queue", polling_interval_sec=0.05)
    assert queue.enqueue(admin_members_wf, 1).get_result() == 2
    worker = DBOS.runtime.queues.worker_threads()["delq-queue"]
    DBOS.delete_queue("delq-queue")
    assert DBOS.retrieve_queue("delq-queue") is None
    assert "delq-queue" not in [q.name for q in DBOS.list_queues()]
    worker.thread.join(10)
    assert not worker.thread.is_alive()
    with pytest.raises(DBOSException, match="not registered"):
        DBOS.enqueue_workflow("delq-queue", admin_members_wf, 2)
    # A workflow still put on it (by a Queue object kept) waits, unrun, in the database...
    handle = queue.enqueue(admin_members_wf, 3)
    status = handle.get_status()
    assert status.status == "ENQUEUED"
    DBOS.delete_queue("delq-queue")  # unknown now: no error
    # ...until the queue is declared again, when a new worker runs it.
    Queue("delq-queue", polling_interval_sec=0.05)
    try:
        assert handle.get_result() == 4
    finally:
        DBOS.delete_queue("delq-queue")  # queues are process-wide: the next test declares it


def test_delete_queue_async_forgets_the_queue(dbos: type[DBOS]) -> None:
    Queue("delq-async-queue")
    asyncio.run(DBOS.delete_queue_async("delq-async-queue"))
    assert DBOS.retrieve_queue("delq-async-queue") is None


def test_reset_system_database_truncates_or_drops_and_the_next_launch_starts_empty(
    make_dbos: MakeDBOS, db_url: str
) -> None:
    make_dbos().launch()
    with SetWorkflowID("reset-1"):
        admin_members_wf(1)
    with pytest.raises(DBOSException, match="before launch"):
        DBOS.reset_system_database()
    DBOS.destroy()
    with pytest.raises(DBOSException, match="schema"):
        DBOS.reset_system_database(schema="other")
    DBOS.reset_system_database(truncate=True)
    make_dbos().launch()
    assert DBOS.list_workflows() == []
    with SetWorkflowID("reset-2"):
        admin_members_wf(2)
    DBOS.destroy()
    DBOS.reset_system_database(system_database_url=db_url)
    make_dbos().launch()
    assert DBOS.list_workflows() == []
    with SetWorkflowID("reset-3"):
        assert admin_members_wf(3) == 4


@pytest.fixture
def conductor() -> Iterator[LoopbackConductor]:
    server = LoopbackConductor()
    yield server
    server.stop()
    _alerts.clear()


def test_alert_handler_gets_conductor_alerts_and_its_error_is_the_reply(
    make_dbos: MakeDBOS, conductor: LoopbackConductor
) -> None:
    make_dbos(conductor_url=conductor.url, conductor_key="key-a").launch()
    session = conductor.next_session()
    alert: dict[str, Any] = {"name": "disk", "message": "90% full", "metadata": {"host": "a"}}
    # No handler: the alert is logged, and answered.
    assert session.request("alert", **alert)["success"] is True
    seen: list[tuple[str, str, dict[str, str]]] = []

    @DBOS.alert_handler
    def on_alert(name: str, message: str, metadata: dict[str, str]) -> None:
        if name == "bad":
            raise RuntimeError("handler broke")
        seen.append((name, message, metadata))

    reply = session.request("alert", **alert)
    assert (reply["success"], reply["error_message"]) == (True, None)
    assert seen == [("disk", "90% full", {"host": "a"})]
    failed = session.request("alert", name="bad", message="m", metadata={})
    assert failed["success"] is False
    assert "handler broke" in failed["error_message"]
    assert session.request("alert", message="no name")["success"] is False
