"""``DBOSClient`` from a separate OS process (no workflow code, no thread of its own)
against a running app, on both backends: enqueue by name, results, send/get_event,
statuses, steps, lists, fork, resume and cancel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spindle import DBOS, DBOSClient, DBOSException, DBOSNonExistentWorkflowError, Queue
from tests.conftest import MakeDBOS

ROOT = Path(__file__).resolve().parents[2]
client_queue = Queue("client-queue", polling_interval_sec=0.1)
#: The marker file the flaky workflow waits for (set per test).
MARKER: list[Path] = []


@DBOS.step()
def client_add_step(a: int, b: int) -> int:
    return a + b


@DBOS.workflow()
def client_add(a: int, b: int) -> int:
    return client_add_step(a, b)


@DBOS.workflow()
def client_waiter() -> str:
    DBOS.set_event("ready", True)
    message = DBOS.recv("greeting", timeout_seconds=30)
    DBOS.set_event("got", message)
    return f"received {message}"


@DBOS.workflow()
def client_flaky() -> str:
    # In the body, not a step: a step's error would be replayed by the resume.
    if not MARKER[0].exists():
        raise ValueError("no marker yet")
    return "ok"


@DBOS.workflow()
def client_streamer(n: int) -> None:
    for i in range(n):
        DBOS.write_stream("numbers", i)
    DBOS.close_stream("numbers")


@pytest.mark.slow
def test_client_from_another_process(make_dbos: MakeDBOS, db_url: str, tmp_path: Path) -> None:
    MARKER[:] = [tmp_path / "marker"]
    make_dbos().launch()
    done = subprocess.run(
        [sys.executable, "-m", "tests.runtime.client_script", db_url, str(MARKER[0])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["add"] == 5
    assert seen["add_again"] == 5  # same workflow ID: the first enqueue's workflow
    assert seen["status"] == ["client_add", "SUCCESS", "client-queue", [[2, 3], {}]]
    assert seen["steps"] == ["client_add_step"]
    assert "c-add" in seen["listed"]
    assert seen["ready"] is True
    assert seen["got"] == "hello"
    assert seen["wait_result"] == "received hello"
    assert seen["no_event"] is None
    assert seen["fork"] == [5, "c-add"]
    assert seen["flaky_error"] == "ValueError: no marker yet"
    assert seen["resumed"] == "ok"
    assert "c-later" in seen["queued"]
    assert seen["cancelled"] == "CANCELLED"
    assert seen["stream"] == [0, 1, 2]
    assert seen["debounced"] == [1, 6]  # one workflow, run with the last call's (3, 3)
    assert seen["first"] is True
    assert seen["schedule"] == ["PAUSED"]
    assert DBOS.get_schedule("c-sched") is not None  # the app sees the client's schedule
    # The client runs no thread of its own.
    assert seen["threads_before"] == seen["threads_during"] == 1
    # The app saw the same workflows.
    assert DBOS.retrieve_workflow("c-flaky").get_result() == "ok"


def test_client_errors(dbos: type[DBOS], db_url: str) -> None:
    client = DBOSClient(system_database_url=db_url)
    try:
        with pytest.raises(DBOSNonExistentWorkflowError):
            client.retrieve_workflow("nope")
        with pytest.raises(DBOSException, match="needs queue_name"):
            client.fork_workflow("nope", 1)
        with pytest.raises(DBOSException, match="workflow_name and queue_name"):
            client.enqueue({"queue_name": "client-queue"})  # type: ignore[typeddict-item]
        with pytest.raises(DBOSException, match="Invalid priority"):
            client.enqueue({"queue_name": "q", "workflow_name": "w", "priority": 0})
        handle = client.enqueue({"queue_name": "client-queue", "workflow_name": "client_add"}, 1, 2)
        assert handle.get_result() == 3
        with pytest.raises(DBOSException, match="on no queue"):
            client.resume_workflow(DBOS.start_workflow(client_add, 1, 1).get_workflow_id())
    finally:
        client.destroy()
    with pytest.raises(DBOSException, match="system_database_url"):
        DBOSClient()
