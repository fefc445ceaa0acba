"""The admin server: a real uvicorn in a supervised thread, the DBOS 2.x endpoints."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import httpx
import pytest

from spindle import DBOS, Queue
from spindle.diagnostics import ThreadKind
from tests.conftest import MakeDBOS
from tests.runtime.queue_app import enqueue_row


@DBOS.step()
def admin_step(x: int) -> int:
    return x + 1


@DBOS.workflow()
def admin_workflow(x: int) -> int:
    return admin_step(x) + admin_step(x + 10)


@pytest.fixture
def admin(make_dbos: MakeDBOS) -> Iterator[httpx.Client]:
    make_dbos(run_admin_server=True, admin_port=0).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


def test_admin_server_thread_is_supervised(admin: httpx.Client) -> None:
    """The server runs in dbos-admin-server, stopped and joined by destroy()."""
    assert admin.get("/dbos-healthz").text == "healthy"
    names = {t.name: t for t in DBOS.thread_registry.snapshot().threads}
    assert names["dbos-admin-server"].kind is ThreadKind.ADMIN_SERVER
    admin.close()
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []


def test_workflow_endpoints(admin: httpx.Client) -> None:
    """List, get, steps, cancel, resume and fork over HTTP."""
    handle = DBOS.start_workflow(admin_workflow, 1)
    assert handle.get_result() == 2 + 12
    listed = admin.post("/workflows", json={"workflow_name": "admin_workflow"}).json()
    assert [w["WorkflowUUID"] for w in listed] == [handle.workflow_id]
    one = admin.get(f"/workflows/{handle.workflow_id}").json()
    assert one["Status"] == "SUCCESS"
    assert one["Output"] == "14"
    steps = admin.get(f"/workflows/{handle.workflow_id}/steps").json()
    assert [s["function_name"] for s in steps] == ["admin_step", "admin_step"]
    assert [s["output"] for s in steps] == ["2", "12"]
    forked = admin.post(f"/workflows/{handle.workflow_id}/fork", json={"start_step": 2})
    assert forked.status_code == 200
    new_id = forked.json()["workflow_id"]
    assert DBOS.retrieve_workflow(new_id).get_result() == 14
    assert admin.post(f"/workflows/{handle.workflow_id}/cancel").status_code == 204
    assert admin.post(f"/workflows/{handle.workflow_id}/resume").status_code == 204
    assert admin.post("/dbos-workflow-recovery", json=["local"]).status_code == 200


def test_fork_runs_the_facades_operation(admin: httpx.Client) -> None:
    """The admin fork is DBOS.fork_workflow's: a copy for another application version
    waits PENDING for a process of that version instead of running here."""
    handle = DBOS.start_workflow(admin_workflow, 1)
    assert handle.get_result() == 14
    other = admin.post(
        f"/workflows/{handle.workflow_id}/fork",
        json={"start_step": 1, "application_version": "not-this-one"},
    )
    assert other.status_code == 200
    status = DBOS.get_workflow_status(other.json()["workflow_id"])
    assert status is not None
    assert (status.status, status.app_version) == ("PENDING", "not-this-one")
    assert status.forked_from == handle.workflow_id
    restarted = admin.post(f"/workflows/{handle.workflow_id}/restart").json()["workflow_id"]
    assert DBOS.retrieve_workflow(restarted).get_result() == 14


def test_bad_requests_are_4xx(admin: httpx.Client) -> None:
    """Unknown IDs are 404 and malformed bodies 400, never a 500."""
    assert admin.get("/workflows/nope").status_code == 404
    assert admin.get("/workflows/nope/steps").status_code == 404
    assert admin.post("/workflows/nope/cancel").status_code == 404
    assert admin.post("/workflows", content=b"{not json").status_code == 400
    assert admin.post("/workflows", json={"limit": "ten"}).status_code == 400
    assert admin.post("/workflows", json={"limit": -1}).status_code == 400
    assert admin.post("/workflows", json=[1, 2]).status_code == 400
    assert admin.post("/workflows", json={"start_time": "soon"}).status_code == 400
    assert admin.post("/dbos-workflow-recovery", json={"a": 1}).status_code == 400
    assert admin.post("/dbos-garbage-collect", json={"rows_threshold": -3}).status_code == 400
    assert admin.get("/workflows").status_code == 405


def test_garbage_collect_and_global_timeout(admin: httpx.Client) -> None:
    """GC deletes only finished workflows; the global timeout cancels old pending ones."""
    for i in range(3):
        admin_workflow(i)
    gc = admin.post("/dbos-garbage-collect", json={"rows_threshold": 1}).json()
    assert gc == {"deleted": 2}
    assert len(DBOS.list_workflows()) == 1
    timeout = admin.post("/dbos-global-timeout", json={}).json()
    assert timeout == {"cancelled": []}


def test_taken_port_is_one_clear_error(
    make_dbos: MakeDBOS, caplog: pytest.LogCaptureFixture
) -> None:
    """A port already in use logs one error naming it; the app still runs."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        caplog.set_level(logging.WARNING)
        make_dbos(run_admin_server=True, admin_port=port).launch()
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert f"admin port {port} on 127.0.0.1 is already in use" in errors[0].getMessage()
        assert errors[0].exc_info is None
        assert admin_workflow(1) == 14
    finally:
        blocker.close()


def test_dashboard_is_served_by_the_admin_server(make_dbos: MakeDBOS) -> None:
    """With diagnostics on, /dbos/threads shows the app's own threads, behind the token."""
    make_dbos(
        run_admin_server=True, admin_port=0, enable_diagnostics=True, admin_token="s3cret"
    ).launch()
    assert DBOS.start_workflow(admin_workflow, 1).get_result() == 14
    url = DBOS.runtime.admin_url
    assert url is not None
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/dbos/threads").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        page = client.get("/dbos/threads", headers=auth)
        assert page.status_code == 200
        assert "dbos-admin-server" in page.text
        assert "dbos-timeout-enforcer" in page.text
        data = client.get("/dbos/threads.json", headers=auth).json()
        names = {t["name"] for t in data["threads"]}
        assert {"dbos-event-loop", "dbos-timeout-enforcer", "dbos-admin-server"} <= names
        assert client.get("/dbos/threads/999999.json", headers=auth).status_code == 404
        # The admin endpoints themselves stay as DBOS serves them.
        assert client.get("/dbos-healthz").status_code == 200
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []


# Declared at import time, as apps declare queues.
admin_meta_queue = Queue(
    "admin-meta", concurrency=5, limiter={"limit": 10, "period": 2.0}, worker_concurrency=2
)


def test_queues_metadata_lists_the_declared_queues(admin: httpx.Client) -> None:
    """/dbos-workflow-queues-metadata shows every declared queue with its limits."""
    listed = {q["name"]: q for q in admin.get("/dbos-workflow-queues-metadata").json()}
    assert listed[admin_meta_queue.name] == {
        "name": "admin-meta",
        "concurrency": 5,
        "workerConcurrency": 2,
        "rateLimit": {"limit": 10, "period": 2.0},
        "priorityEnabled": False,
        "pollingIntervalSec": 1.0,
    }


def test_queues_lists_one_queue_up_to_the_limit(admin: httpx.Client) -> None:
    """POST /queues filters by queue in the query: the limit counts that queue's workflows,
    not every queued workflow (it filtered after the limit before)."""
    rt = DBOS.runtime
    for queue_name, count in (("admin-a", 3), ("admin-b", 2)):
        for i in range(count):
            enqueue_row(rt.sysdb, queue_name, f"{queue_name}-{i}")
    listed = admin.post("/queues", json={"queue_name": "admin-b", "limit": 2}).json()
    assert [w["WorkflowUUID"] for w in listed] == ["admin-b-0", "admin-b-1"]
    assert {w["QueueName"] for w in listed} == {"admin-b"}
    assert len(admin.post("/queues", json={}).json()) == 5
    assert admin.post("/queues", json={"limit": -1}).status_code == 400
