"""Admin endpoints do what they say, checked in the database and by the workflows themselves
(not by status codes alone): cancel, resume, recovery, restart and deactivate."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from spindle import DBOS, DBOSAwaitedWorkflowCancelledError
from spindle.diagnostics import ThreadGroup
from spindle.runtime._schema import workflow_status as ws
from tests.conftest import MakeDBOS

WAIT = 10.0

started = threading.Event()
release = threading.Event()
body_runs: list[str] = []
step_runs: list[str] = []


@pytest.fixture(autouse=True)
def _reset(admin: httpx.Client) -> Iterator[None]:
    # Depends on the launched runtime so that its teardown (releasing held workflows) runs
    # before destroy(): a failing test then costs no join timeout.
    started.clear()
    release.clear()
    body_runs.clear()
    step_runs.clear()
    yield
    release.set()  # never leave a held workflow blocking an executor thread


@DBOS.step()
def effect_step(tag: str) -> str:
    step_runs.append(tag)
    return tag


@DBOS.workflow()
def effect_held(tag: str) -> str:
    """Step, then wait for the test (outside a step), then step: a cancel lands at the 2nd."""
    body_runs.append(tag)
    effect_step(f"{tag}-1")
    started.set()
    assert release.wait(WAIT)
    return effect_step(f"{tag}-2")


@DBOS.workflow()
def effect_quick(tag: str) -> str:
    body_runs.append(tag)
    return effect_step(tag) + effect_step(tag + "!")


@pytest.fixture
def admin(make_dbos: MakeDBOS) -> Iterator[httpx.Client]:
    make_dbos(run_admin_server=True, admin_port=0).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    with httpx.Client(base_url=url, timeout=WAIT) as client:
        yield client


def _status(wf_id: str) -> str:
    with DBOS.runtime.sysdb.engine.connect() as conn:
        return str(
            conn.execute(sa.select(ws.c.status).where(ws.c.workflow_uuid == wf_id)).scalar_one()
        )


def test_admin_cancel_stops_the_workflow_and_resume_runs_it_to_success(
    admin: httpx.Client,
) -> None:
    """POST cancel: CANCELLED in the database, the workflow stops at its next step. POST
    resume: it runs again, replays step 1, runs step 2 and ends SUCCESS."""
    handle = DBOS.start_workflow(effect_held, "c")
    assert started.wait(WAIT)
    assert admin.post(f"/workflows/{handle.workflow_id}/cancel").status_code == 204
    assert _status(handle.workflow_id) == "CANCELLED"
    release.set()
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    assert step_runs == ["c-1"]  # stopped before its second step

    assert admin.post(f"/workflows/{handle.workflow_id}/resume").status_code == 204
    assert DBOS.retrieve_workflow(handle.workflow_id).get_result() == "c-2"
    assert _status(handle.workflow_id) == "SUCCESS"
    assert step_runs == ["c-1", "c-2"]
    assert body_runs == ["c", "c"]


def test_admin_recovery_restarts_the_named_executors_pending_workflows(
    admin: httpx.Client,
) -> None:
    """A PENDING workflow owned by another executor is recovered here: the response lists it,
    its body runs again (its steps replay) and it ends SUCCESS. Other executors' are left."""
    done = DBOS.start_workflow(effect_quick, "r")
    assert done.get_result() == "rr!"
    other = DBOS.start_workflow(effect_quick, "o")
    assert other.get_result() == "oo!"
    with DBOS.runtime.sysdb.transaction() as conn:
        conn.execute(
            ws.update()
            .where(ws.c.workflow_uuid == done.workflow_id)
            .values(status="PENDING", executor_id="vm-crashed", output=None)
        )
        conn.execute(
            ws.update()
            .where(ws.c.workflow_uuid == other.workflow_id)
            .values(status="PENDING", executor_id="vm-elsewhere", output=None)
        )
    body_runs.clear()
    step_runs.clear()
    recovered = admin.post("/dbos-workflow-recovery", json=["vm-crashed"])
    assert recovered.status_code == 200
    assert recovered.json() == [done.workflow_id]
    assert DBOS.retrieve_workflow(done.workflow_id).get_result() == "rr!"
    assert _status(done.workflow_id) == "SUCCESS"
    assert body_runs == ["r"]
    assert step_runs == []  # both steps replayed from their records
    assert _status(other.workflow_id) == "PENDING"


def test_admin_restart_runs_a_new_copy_from_the_first_step(admin: httpx.Client) -> None:
    """POST restart: a new workflow ID whose run executes every step again."""
    original = DBOS.start_workflow(effect_quick, "s")
    assert original.get_result() == "ss!"
    r = admin.post(f"/workflows/{original.workflow_id}/restart")
    assert r.status_code == 200
    new_id = r.json()["workflow_id"]
    assert new_id != original.workflow_id
    assert DBOS.retrieve_workflow(new_id).get_result() == "ss!"
    assert step_runs == ["s", "s!", "s", "s!"]
    assert body_runs == ["s", "s"]
    assert _status(original.workflow_id) == "SUCCESS"
    assert admin.post("/workflows/nope/restart").status_code == 404


def test_admin_deactivate_stops_the_pollers_and_keeps_running_workflows(
    admin: httpx.Client,
) -> None:
    """GET /deactivate signals the threads that start work (pollers) and nothing else;
    workflows still run afterwards."""
    r = admin.get("/deactivate")
    assert r.status_code == 200
    threads = DBOS.runtime.supervisor.threads()
    pollers = [s for s in threads if s.record.group is ThreadGroup.POLLER]
    others = [s for s in threads if s.record.group is not ThreadGroup.POLLER]
    assert {s.record.name for s in pollers} >= {"dbos-dynamic-scheduler"}
    for s in pollers:
        assert s.stop.is_set(), s.record.name
        s.thread.join(WAIT)
        assert not s.thread.is_alive(), s.record.name
    assert others
    assert not any(s.stop.is_set() for s in others)
    assert DBOS.start_workflow(effect_quick, "d").get_result() == "dd!"
