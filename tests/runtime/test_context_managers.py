"""DBOS 2.30's DBOSContextEnsure and PropagateOtelContext, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from spindle import (
    DBOS,
    DBOSContextEnsure,
    PropagateOtelContext,
    Queue,
    SetWorkflowAttributes,
    SetWorkflowID,
)

ctxm_queue = Queue("ctxm-queue", polling_interval_sec=0.1)
# A provider of the test's own: the global one is left alone.
_tracer = TracerProvider().get_tracer("ctxm-test")


@DBOS.workflow()
def ctxm_child() -> str:
    return "child"


@DBOS.workflow()
def ctxm_parent() -> str:
    with SetWorkflowID("ctxm-child-of-parent"):
        return ctxm_child()


def _attributes(wf_id: str) -> Any:
    status = DBOS.get_workflow_status(wf_id)
    assert status is not None
    return status.attributes


def _trace_id(span: trace.Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def test_dbos_context_ensure_changes_nothing_and_lets_errors_through(dbos: type[DBOS]) -> None:
    with DBOSContextEnsure() as outer, DBOSContextEnsure(), SetWorkflowID("ctxm-ensured"):
        assert isinstance(outer, DBOSContextEnsure)
        assert ctxm_child() == "child"
    assert DBOS.get_workflow_status("ctxm-ensured") is not None
    with pytest.raises(KeyError), DBOSContextEnsure():
        raise KeyError("through")


def test_propagate_otel_context_stores_the_callers_trace_on_started_and_enqueued_workflows(
    dbos: type[DBOS],
) -> None:
    with _tracer.start_as_current_span("request") as span, PropagateOtelContext():
        with SetWorkflowID("ctxm-started"):
            ctxm_parent()
        queued = ctxm_queue.enqueue(ctxm_child)
    assert queued.get_result() == "child"
    for wf_id in ("ctxm-started", queued.workflow_id):
        carrier = _attributes(wf_id)["dbos.otelContext"]
        assert set(carrier) <= {"traceparent", "tracestate"}
        assert carrier["traceparent"].split("-")[1] == _trace_id(span)
    # Not inherited by a child workflow, as in DBOS.
    assert _attributes("ctxm-child-of-parent") is None


def test_propagate_otel_context_takes_a_given_context_and_keeps_other_attributes(
    dbos: type[DBOS],
) -> None:
    with _tracer.start_as_current_span("elsewhere") as span:
        given = trace.set_span_in_context(span)
    with (
        SetWorkflowAttributes({"team": "a"}),
        PropagateOtelContext(given),
        SetWorkflowAttributes({"inner": 1}),
        SetWorkflowID("ctxm-given"),
    ):
        ctxm_child()
    attributes = _attributes("ctxm-given")
    assert attributes["inner"] == 1
    assert attributes["dbos.otelContext"]["traceparent"].split("-")[1] == _trace_id(span)
    # Outside any span there is no trace to propagate: nothing is stored.
    with PropagateOtelContext(), SetWorkflowID("ctxm-no-trace"):
        ctxm_child()
    assert _attributes("ctxm-no-trace") is None
