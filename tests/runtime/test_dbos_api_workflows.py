"""DBOS 2.30's introspection and management names, on both backends, as DBOS documents them:
get_workflow_status, list_workflows filters, list_workflow_steps, get_result, wait_first,
cancel/resume/delete in bulk, fork_workflow, run_step, step_status, should_retry."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spindle import (
    DBOS,
    DBOSAwaitedWorkflowCancelledError,
    DBOSException,
    DBOSNonExistentWorkflowError,
    SetWorkflowID,
    WorkflowHandle,
    WorkflowStatus,
)
from spindle.runtime._facade_props import StepStatus
from tests.conftest import MakeDBOS

WAIT = 10.0
calls: dict[str, int] = {}
statuses: list[StepStatus | None] = []
gate = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    statuses.clear()
    gate.clear()


def bump(key: str) -> int:
    calls[key] = calls.get(key, 0) + 1
    return calls[key]


@DBOS.step()
def api_step(x: int) -> int:
    bump(f"step:{x}")
    statuses.append(DBOS.step_status)
    return x + 1


@DBOS.step()
def api_boom() -> None:
    raise ValueError("boom")


@DBOS.workflow()
def api_two_steps(x: int) -> int:
    return api_step(x) + api_step(x + 10)


@DBOS.workflow()
def api_child(x: int) -> int:
    return x * 3


@DBOS.workflow()
def api_parent(x: int) -> int:
    return DBOS.start_workflow(api_child, x).get_result()


@DBOS.workflow()
def api_gated() -> str:
    gate.wait(WAIT)
    api_step(0)
    return "opened"


@DBOS.workflow()
def api_fails_in_step() -> None:
    api_boom()


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.001, backoff_rate=1.0)
def api_retried(fail_times: int) -> str:
    statuses.append(DBOS.step_status)
    if bump("retried") <= fail_times:
        raise ConnectionError("transient")
    return "ok"


@DBOS.workflow()
def api_retrying(fail_times: int) -> str:
    return api_retried(fail_times)


@DBOS.step(
    retries_allowed=True,
    max_attempts=5,
    interval_seconds=0.001,
    should_retry=lambda e: not isinstance(e, KeyError),
)
def api_selective(exc_type: str) -> None:
    bump("selective")
    raise KeyError("permanent") if exc_type == "key" else ConnectionError("transient")


@DBOS.workflow()
def api_selective_wf(exc_type: str) -> None:
    api_selective(exc_type)


@DBOS.workflow()
def api_reads_status(target: str) -> str | None:
    status = DBOS.get_workflow_status(target)
    return None if status is None else status.status


def plain_add(a: int, b: int) -> int:
    bump("plain_add")
    return a + b


@DBOS.workflow()
def api_run_step(a: int) -> int:
    return DBOS.run_step({"name": "adder"}, plain_add, a, 1)


def test_status_has_every_dbos_field(dbos: type[DBOS]) -> None:
    """get_workflow_status: DBOS's fields, recovery_attempts counting the first run,
    completed_at for a finished workflow; an unknown ID is None; the async twin agrees."""
    with SetWorkflowID("st-1"):
        assert api_two_steps(1) == 2 + 12
    status = DBOS.get_workflow_status("st-1")
    assert isinstance(status, WorkflowStatus)
    assert (status.status, status.name, status.output, status.input) == (
        "SUCCESS",
        "api_two_steps",
        14,
        ((1,), {}),
    )
    assert status.recovery_attempts == 1
    assert status.completed_at == status.updated_at
    assert (status.class_name, status.config_name) == (None, None)
    assert (status.forked_from, status.was_forked_from) == (None, False)
    assert status.app_version == DBOS.application_version == "0"
    assert status.executor_id == DBOS.executor_id == "local"
    assert DBOS.get_workflow_status("no-such") is None
    assert asyncio.run(DBOS.get_workflow_status_async("st-1")) == status


def test_list_workflows_filters(dbos: type[DBOS]) -> None:
    """Each DBOS filter narrows the list; a filter on what Spindle never records (users)
    matches nothing; a wrong keyword is a TypeError."""
    with SetWorkflowID("lf-parent"):
        assert api_parent(2) == 6
    with SetWorkflowID("lf-two"):
        api_two_steps(0)
    ids = {w.workflow_id for w in DBOS.list_workflows()}
    assert {"lf-parent", "lf-parent-1", "lf-two"} <= ids
    assert [w.workflow_id for w in DBOS.list_workflows(workflow_id_prefix="lf-p")] == [
        "lf-parent",
        "lf-parent-1",
    ]
    assert [w.workflow_id for w in DBOS.list_workflows(has_parent=True)] == ["lf-parent-1"]
    assert [w.workflow_id for w in DBOS.list_workflows(parent_workflow_id="lf-parent")] == [
        "lf-parent-1"
    ]
    assert {w.name for w in DBOS.list_workflows(name=["api_child", "api_two_steps"])} == {
        "api_child",
        "api_two_steps",
    }
    assert DBOS.list_workflows(app_version="other") == []
    assert len(DBOS.list_workflows(executor_id="local")) == 3
    assert DBOS.list_workflows(user="alice") == []
    no_output = DBOS.list_workflows(workflow_ids=["lf-two"], load_output=False)[0]
    assert (no_output.output, no_output.status) == (None, "SUCCESS")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert DBOS.list_workflows(completed_after=later) == []
    assert len(DBOS.list_workflows(completed_before=later)) == 3
    newest = DBOS.list_workflows(sort_desc=True, limit=1)
    assert [w.workflow_id for w in newest] == ["lf-two"]
    assert len(DBOS.list_workflows(offset=1)) == 2
    assert len(asyncio.run(DBOS.list_workflows_async(has_parent=False))) == 2
    with pytest.raises(TypeError, match="no_such_filter"):
        DBOS.list_workflows(no_such_filter=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="limit"):
        DBOS.list_workflows(limit=-1)


def test_list_workflow_steps(dbos: type[DBOS]) -> None:
    """StepInfo dicts in step order with outputs and errors; load_output, limit, offset."""
    with SetWorkflowID("steps-1"):
        api_two_steps(5)
    steps = DBOS.list_workflow_steps("steps-1")
    assert [(s["function_id"], s["function_name"], s["output"]) for s in steps] == [
        (1, "api_step", 6),
        (2, "api_step", 16),
    ]
    assert set(steps[0]) == {
        "function_id",
        "function_name",
        "output",
        "error",
        "child_workflow_id",
        "started_at_epoch_ms",
        "completed_at_epoch_ms",
    }
    assert all(isinstance(s["completed_at_epoch_ms"], int) for s in steps)
    assert [s["output"] for s in DBOS.list_workflow_steps("steps-1", load_output=False)] == [
        None,
        None,
    ]
    assert [s["function_id"] for s in DBOS.list_workflow_steps("steps-1", offset=1)] == [2]
    assert [s["function_id"] for s in DBOS.list_workflow_steps("steps-1", limit=1)] == [1]
    with SetWorkflowID("steps-err"), pytest.raises(ValueError, match="boom"):
        api_fails_in_step()
    (failed,) = DBOS.list_workflow_steps("steps-err")
    assert isinstance(failed["error"], ValueError)
    assert asyncio.run(DBOS.list_workflow_steps_async("steps-1")) == steps
    assert DBOS.list_workflow_steps("no-such") == []


def test_get_result_and_wait_first(dbos: type[DBOS]) -> None:
    """get_result waits for a workflow by ID; wait_first returns the handle that ended first
    (rejecting an empty or duplicated list)."""
    blocked = DBOS.start_workflow(api_gated)
    with SetWorkflowID("quick"):
        quick = DBOS.start_workflow(api_two_steps, 1)
    assert DBOS.wait_first([blocked, quick]) is quick
    assert DBOS.get_result("quick") == 14
    gate.set()
    assert DBOS.get_result(blocked.workflow_id) == "opened"
    with pytest.raises(ValueError, match="empty"):
        DBOS.wait_first([])
    with pytest.raises(ValueError, match="duplicate"):
        DBOS.wait_first([quick, quick])

    async def main() -> Any:
        handle = await DBOS.start_workflow_async(api_two_steps, 2)
        first = await DBOS.wait_first_async([handle])
        return first is handle, await DBOS.get_result_async(handle.workflow_id)

    assert asyncio.run(main()) == (True, 16)


def test_reads_inside_a_workflow_are_steps(dbos: type[DBOS]) -> None:
    """A status read in a workflow is recorded as DBOS's DBOS.getStatus step, so a replay
    returns what the first run saw."""
    with SetWorkflowID("reader"):
        assert api_reads_status("no-such") is None
    (step,) = DBOS.list_workflow_steps("reader")
    assert step["function_name"] == "DBOS.getStatus"


def test_cancel_resume_delete_in_bulk(dbos: type[DBOS]) -> None:
    """cancel_workflows(cancel_children=), resume_workflows and delete_workflows
    (delete_children=) act on every ID given."""
    a = DBOS.start_workflow(api_gated)
    b = DBOS.start_workflow(api_gated)
    DBOS.cancel_workflows([a.workflow_id, b.workflow_id])
    for h in (a, b):
        with pytest.raises(DBOSAwaitedWorkflowCancelledError):
            h.get_result()
    assert {s.status for s in DBOS.list_workflows()} == {"CANCELLED"}
    gate.set()
    handles = DBOS.resume_workflows([a.workflow_id, b.workflow_id])
    assert [h.get_result() for h in handles] == ["opened", "opened"]
    with SetWorkflowID("del-parent"):
        api_parent(1)
    DBOS.delete_workflows([a.workflow_id])
    assert DBOS.get_workflow_status(a.workflow_id) is None
    assert DBOS.list_workflow_steps(a.workflow_id) == []
    DBOS.delete_workflow("del-parent", delete_children=True)
    assert DBOS.get_workflow_status("del-parent-1") is None
    asyncio.run(DBOS.delete_workflow_async(b.workflow_id))
    assert DBOS.list_workflows() == []
    with pytest.raises(DBOSNonExistentWorkflowError, match="Non-existent target workflow ID: x"):
        DBOS.cancel_workflow("x", cancel_children=True)


def test_fork_replays_steps_before_start_step(dbos: type[DBOS]) -> None:
    """fork_workflow(id, start_step): the steps before start_step are copied, the rest run
    again under the new ID (SetWorkflowID names it); forked_from links both ways."""
    with SetWorkflowID("orig"):
        api_two_steps(3)
    assert calls == {"step:3": 1, "step:13": 1}
    with SetWorkflowID("fork-1"):
        handle = DBOS.fork_workflow("orig", 2)
    assert handle.workflow_id == "fork-1"
    assert handle.get_result() == 4 + 14
    assert calls == {"step:3": 1, "step:13": 2}  # step 1 replayed, step 2 ran again
    fork = DBOS.get_workflow_status("fork-1")
    assert fork is not None
    assert fork.forked_from == "orig"
    assert handle.get_status() == fork  # the handle's status has every field too
    assert DBOS.list_workflows(forked_from="orig")[0].workflow_id == "fork-1"
    assert [w.workflow_id for w in DBOS.list_workflows(was_forked_from=True)] == ["orig"]
    again = asyncio.run(DBOS.fork_workflow_async("orig", 1))
    assert asyncio.run(again.get_result()) == 18
    with pytest.raises(DBOSNonExistentWorkflowError, match="Non-existent target workflow ID"):
        DBOS.fork_workflow("no-such", 1)
    # Another version's fork waits for a process of that version; this one does not run it.
    other = DBOS.fork_workflow("orig", 1, application_version="v-other")
    status = DBOS.get_workflow_status(other.workflow_id)
    assert status is not None
    assert (status.status, status.app_version) == ("PENDING", "v-other")
    assert calls == {"step:3": 2, "step:13": 3}  # the fork from step 1 ran both; not this one


def test_step_status_and_step_id(dbos: type[DBOS]) -> None:
    """DBOS.step_status inside a step: its ID, and for a retried step its zero-based attempt
    and max attempts; None outside a step, as DBOS.step_id."""
    with SetWorkflowID("ss"):
        api_two_steps(0)
    assert statuses == [StepStatus(1, None, None), StepStatus(2, None, None)]
    assert (DBOS.step_status, DBOS.step_id) == (None, None)
    statuses.clear()
    assert api_retrying(2) == "ok"
    assert statuses == [StepStatus(1, 0, 3), StepStatus(1, 1, 3), StepStatus(1, 2, 3)]


def test_should_retry_stops_retries(dbos: type[DBOS]) -> None:
    """should_retry returning False re-raises the error at once; True keeps retrying."""
    with pytest.raises(KeyError):
        api_selective_wf("key")
    assert calls["selective"] == 1
    calls.clear()
    with pytest.raises(DBOSException, match="has exceeded its maximum of 5 retries"):
        api_selective_wf("conn")
    assert calls["selective"] == 5


def test_sync_step_with_async_should_retry_is_rejected() -> None:
    """As DBOS: a sync step cannot take an async predicate, nor be preemptible."""

    async def predicate(exc: BaseException) -> bool:
        return True

    with pytest.raises(DBOSException, match="is sync but should_retry is async"):
        DBOS.step(should_retry=predicate)(plain_add)
    with pytest.raises(DBOSException, match="preemptible"):
        DBOS.step(preemptible=True)(plain_add)


def test_run_step_is_checkpointed(dbos: type[DBOS]) -> None:
    """DBOS.run_step runs a plain function as a named step: a second run of the same
    workflow ID replays it."""
    with SetWorkflowID("rs"):
        assert api_run_step(4) == 5
    with SetWorkflowID("rs"):
        assert api_run_step(4) == 5
    assert calls["plain_add"] == 1
    assert DBOS.list_workflow_steps("rs")[0]["function_name"] == "adder"
    assert DBOS.run_step(None, plain_add, 1, 1) == 2  # outside a workflow: a plain call


def test_logger_is_dbos_namespace(dbos: type[DBOS], caplog: pytest.LogCaptureFixture) -> None:
    """DBOS.logger is the 'dbos' logger; steps log DBOS's Running/Replaying debug lines."""
    assert DBOS.logger is logging.getLogger("dbos")
    with caplog.at_level(logging.DEBUG, logger="dbos"):
        with SetWorkflowID("logged"):
            api_two_steps(7)
        DBOS.fork_workflow("logged", 2).get_result()  # replays step 1
    lines = [r.getMessage() for r in caplog.records if r.name == "dbos"]
    assert "Running step, id: 1, name: api_step" in lines
    assert "Replaying step, id: 1, name: api_step" in lines


def test_duplicate_registration_warns(caplog: pytest.LogCaptureFixture) -> None:
    """A second function under one workflow name warns as DBOS does (no error)."""

    def first() -> None: ...

    def second() -> None: ...

    with caplog.at_level(logging.WARNING, logger="dbos"):
        DBOS.workflow(name="api-dup-name")(first)
        DBOS.workflow(name="api-dup-name")(second)
    assert any(
        "Duplicate registration of function 'api-dup-name'" in r.getMessage()
        for r in caplog.records
    )


def test_application_version_needs_an_instance(make_dbos: MakeDBOS) -> None:
    """DBOS.application_version and executor_id read the configuration."""
    make_dbos(application_version="v2", executor_id="exec-9")
    assert (DBOS.application_version, DBOS.executor_id) == ("v2", "exec-9")


#: The fields of DBOS 2.30's admin/Conductor ``WorkflowsOutput``.
DBOS_WORKFLOW_JSON_FIELDS = {
    "WorkflowUUID", "Status", "WorkflowName", "WorkflowClassName", "WorkflowConfigName",
    "AuthenticatedUser", "AssumedRole", "AuthenticatedRoles", "Input", "Output", "Error",
    "CreatedAt", "UpdatedAt", "QueueName", "ApplicationVersion", "ExecutorID",
    "WorkflowTimeoutMS", "WorkflowDeadlineEpochMS", "DeduplicationID", "Priority",
    "QueuePartitionKey", "ForkedFrom", "WasForkedFrom", "ParentWorkflowID", "DequeuedAt",
    "DelayUntilEpochMS", "CompletedAt", "Attributes", "ScheduleName", "ApplicationName",
}  # fmt: skip


def test_admin_json_has_dbos_field_names(dbos: type[DBOS]) -> None:
    """The admin API's workflow JSON carries every DBOS field, numbers as strings."""
    from spindle.runtime._admin_api import workflow_json

    with SetWorkflowID("json-1"):
        api_two_steps(1)
    DBOS.fork_workflow("json-1", 2).get_result()
    status = DBOS.get_workflow_status("json-1")
    assert status is not None
    body = workflow_json(status)
    assert set(body) >= DBOS_WORKFLOW_JSON_FIELDS
    assert (body["Output"], body["Priority"], body["WasForkedFrom"]) == ("14", "0", True)
    assert body["CompletedAt"] == str(status.completed_at)


def test_application_versions(make_dbos: MakeDBOS) -> None:
    """Each launch registers its version; set_latest_application_version makes one the
    latest; the _async twins agree."""
    make_dbos(application_version="v1").launch()
    (v1,) = DBOS.list_application_versions()
    assert (v1["version_name"], v1["application_name"]) == ("v1", "spindle-test")
    assert DBOS.get_latest_application_version()["version_name"] == "v1"
    DBOS.set_latest_application_version("v2")
    assert [v["version_name"] for v in DBOS.list_application_versions()] == ["v2", "v1"]
    DBOS.set_latest_application_version("v1")
    latest = asyncio.run(DBOS.get_latest_application_version_async())
    assert latest["version_name"] == "v1"
    assert len(asyncio.run(DBOS.list_application_versions_async())) == 2
    with pytest.raises(ValueError, match="application_name"):
        DBOS.set_latest_application_version("v3", application_name="another-app")


@DBOS.step()
def span_probe() -> str:
    span = DBOS.span
    return format(span.get_span_context().span_id, "016x") if span is not None else ""


@DBOS.workflow()
def span_workflow() -> str:
    return span_probe()


@pytest.mark.parametrize(
    ("attribute_format", "uuid_key", "type_key"),
    [
        ("legacy", "operationUUID", "operationType"),
        ("semconv", "dbos.operation.workflow_id", "dbos.operation.type"),
    ],
)
def test_workflow_and_step_spans(
    make_dbos: MakeDBOS,
    spindle_span_exporter: Any,
    attribute_format: str,
    uuid_key: str,
    type_key: str,
) -> None:
    """With diagnostics on, each workflow and step is a span with DBOS's attribute names
    (legacy or semconv); the step's span is the workflow's child and is DBOS.span inside."""
    make_dbos(
        enable_diagnostics=True,
        otel_attribute_format=attribute_format,
        otlp_attributes={"team": "shop"},
    ).launch()
    with SetWorkflowID("traced"):
        probed = span_workflow()
    spans = {s.name: s for s in spindle_span_exporter.get_finished_spans()}
    wf, step = spans["span_workflow"], spans["span_probe"]
    assert (wf.attributes[uuid_key], wf.attributes[type_key]) == ("traced", "workflow")
    assert (step.attributes[uuid_key], step.attributes[type_key]) == ("traced", "step")
    assert step.parent.span_id == wf.context.span_id
    assert format(step.context.span_id, "016x") == probed
    assert wf.attributes["team"] == "shop"
    version_key = (
        "applicationVersion" if attribute_format == "legacy" else "dbos.application.version"
    )
    assert wf.attributes[version_key] == "0"
    assert DBOS.span is None  # outside any operation


@DBOS.step()
async def aw_step(x: int) -> int:
    bump(f"aw:{x}")
    return x * 2


@DBOS.workflow()
async def aw_workflow() -> list[int]:
    done, pending = await DBOS.asyncio_wait([aw_step(1), aw_step(2)])
    assert not pending
    return sorted(t.result() for t in done)


def test_asyncio_wait_is_checkpointed(dbos: type[DBOS]) -> None:
    """DBOS.asyncio_wait in a workflow records which awaitables were done (its own step,
    before the steps it waits on); a replay returns the same split without rerunning them;
    outside a workflow it is asyncio.wait."""
    with SetWorkflowID("aw"):
        assert asyncio.run(aw_workflow()) == [2, 4]
    steps = DBOS.list_workflow_steps("aw")
    assert [s["function_name"] for s in steps] == ["DBOS.asyncio_wait", "aw_step", "aw_step"]
    assert steps[0]["output"] == [0, 1]
    replayed = DBOS.fork_workflow("aw", 4)
    assert replayed.get_result() == [2, 4]
    assert calls == {"aw:1": 1, "aw:2": 1}

    async def outside() -> int:
        done, _ = await DBOS.asyncio_wait([asyncio.sleep(0, result=3)])
        return int(done.pop().result())

    assert asyncio.run(outside()) == 3


@DBOS.workflow()
def default_limited() -> str:
    return "ran"


def test_default_max_recovery_attempts_is_dbos_100(make_dbos: MakeDBOS) -> None:
    """As DBOS, a workflow is recovered at most 100 times by default: one that used them up
    is MAX_RECOVERY_ATTEMPTS_EXCEEDED on the next launch, not run a 101st time."""
    from spindle.runtime._schema import workflow_status

    make_dbos().launch()
    with SetWorkflowID("crashy-100"):
        assert default_limited() == "ran"
    with DBOS.runtime.sysdb.transaction() as conn:
        conn.execute(
            workflow_status.update()
            .where(workflow_status.c.workflow_uuid == "crashy-100")
            .values(status="PENDING", output=None, recovery_attempts=100)
        )
    DBOS.destroy()
    DBOS.launch()
    status = DBOS.get_workflow_status("crashy-100")
    assert status is not None
    assert status.status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"


step_started = threading.Event()


@DBOS.step(preemptible=True)
async def preemptible_wait() -> str:
    step_started.set()
    await asyncio.sleep(3600)  # only a cancel of the workflow ends this
    return "never"


@DBOS.workflow()
async def preemptible_workflow() -> str:
    return await preemptible_wait()


def test_preemptible_step_is_cancelled_with_its_workflow(dbos: type[DBOS]) -> None:
    """@DBOS.step(preemptible=True): cancelling the workflow cancels the running async step
    at once (not at its end), and the step is not recorded."""
    step_started.clear()
    handle: WorkflowHandle[Any] = DBOS.start_workflow(preemptible_workflow)
    assert step_started.wait(WAIT)
    DBOS.cancel_workflow(handle.workflow_id)
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    assert DBOS.get_workflow_status(handle.workflow_id).status == "CANCELLED"  # type: ignore[union-attr]
    assert DBOS.list_workflow_steps(handle.workflow_id) == []


waiting = threading.Event()


@DBOS.workflow()
def sleeps_long() -> None:
    DBOS.sleep(3600)


@DBOS.workflow()
def waits_for(child_id: str) -> Any:
    waiting.set()
    return DBOS.get_result(child_id)


def test_shutdown_during_get_result_is_not_recorded(make_dbos: MakeDBOS, db_url: str) -> None:
    """A workflow waiting in DBOS.get_result when the runtime shuts down stays PENDING, and
    the shutdown is not recorded as its DBOS.getResult step's error (it would replay)."""
    import sqlalchemy as sa

    from spindle.runtime._schema import operation_outputs, workflow_status

    waiting.clear()
    make_dbos().launch()
    child = DBOS.start_workflow(sleeps_long)
    with SetWorkflowID("waiter"):
        DBOS.start_workflow(waits_for, child.workflow_id)
    assert waiting.wait(WAIT)
    DBOS.destroy()
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    # SQLite has no schemas: read the tables by their bare names there.
    translated = engine.execution_options(
        schema_translate_map={"dbos": None} if engine.dialect.name == "sqlite" else {}
    )
    try:
        with translated.connect() as conn:
            status = conn.execute(
                sa.select(workflow_status.c.status).where(
                    workflow_status.c.workflow_uuid == "waiter"
                )
            ).scalar_one()
            steps = conn.execute(
                sa.select(operation_outputs.c.function_name).where(
                    operation_outputs.c.workflow_uuid == "waiter"
                )
            ).all()
    finally:
        engine.dispose()
    assert status == "PENDING"
    assert steps == []


def test_workflow_attributes(dbos: type[DBOS], db_url: str) -> None:
    """SetWorkflowAttributes attaches attributes to the workflows started (or enqueued) in
    the block, not to their children; update_workflow_attributes replaces or clears them;
    list_workflows(attributes=) matches by containment on PostgreSQL and raises on SQLite,
    as DBOS."""
    from spindle import SetWorkflowAttributes
    from spindle.runtime._admin_api import workflow_json

    with SetWorkflowAttributes({"customer": "acme", "n": 1}), SetWorkflowID("attr-1"):
        api_parent(1)
    parent, child = DBOS.get_workflow_status("attr-1"), DBOS.get_workflow_status("attr-1-1")
    assert parent is not None
    assert child is not None
    assert (parent.attributes, child.attributes) == ({"customer": "acme", "n": 1}, None)
    assert workflow_json(parent)["Attributes"] == '{"customer": "acme", "n": 1}'
    DBOS.update_workflow_attributes("attr-1", {"tier": 2})
    assert DBOS.get_workflow_status("attr-1").attributes == {"tier": 2}  # type: ignore[union-attr]
    if db_url.startswith("postgres"):
        assert [w.workflow_id for w in DBOS.list_workflows(attributes={"tier": 2})] == ["attr-1"]
        assert DBOS.list_workflows(attributes={"tier": 3}) == []
    else:
        with pytest.raises(DBOSException, match="not supported on SQLite"):
            DBOS.list_workflows(attributes={"tier": 2})
    asyncio.run(DBOS.update_workflow_attributes_async("attr-1", None))
    assert DBOS.get_workflow_status("attr-1").attributes is None  # type: ignore[union-attr]
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.update_workflow_attributes("no-such", {"a": 1})
    with pytest.raises(DBOSException, match="Attributes must be a dict"):
        SetWorkflowAttributes([1])  # type: ignore[arg-type]
    with pytest.raises(DBOSException, match="JSON-serializable"):
        DBOS.update_workflow_attributes("attr-1", {"a": object()})
