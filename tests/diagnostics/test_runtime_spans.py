"""End to end: a real app's threads and shutdown reach a real OTLP receiver (both backends)."""

from __future__ import annotations

from spindle import DBOS
from spindle.diagnostics import SHUTDOWN_PHASES
from tests.conftest import MakeDBOS
from tests.diagnostics.conftest import OtlpReceiver


@DBOS.step()
def span_step(x: int) -> int:
    return x + 1


@DBOS.workflow()
def span_workflow(x: int) -> int:
    return span_step(x) + span_step(x)


def test_app_spans_reach_the_receiver(make_dbos: MakeDBOS, otlp_receiver: OtlpReceiver) -> None:
    """launch, workflows on the executor, destroy: every lifecycle span arrives, the shutdown
    span's children are the phases in order, and the exporter flushed after the DB close."""
    make_dbos(
        name="shop", enable_diagnostics=True, otlp_traces_endpoints=[otlp_receiver.url]
    ).launch()
    handles = [DBOS.start_workflow(span_workflow, i) for i in range(5)]
    assert [h.get_result() for h in handles] == [2 * (i + 1) for i in range(5)]
    DBOS.destroy()
    otlp_receiver.wait_for(lambda spans: any(s.name == "spindle.shutdown" for s in spans))
    spans = list(otlp_receiver.spans)
    assert {s.resource.get("service.name") for s in spans} == {"shop"}

    spawned = {s.attributes["thread.name"]: s for s in spans if s.name == "spindle.thread.spawn"}
    assert spawned["dbos-event-loop"].attributes["spindle.thread.kind"] == "event_loop"
    assert spawned["dbos-timeout-enforcer"].attributes["spindle.thread.kind"] == "timeout"
    assert spawned["dbos-timeout-enforcer"].attributes["spindle.thread.group"] == "internal"
    executors = [n for n in spawned if n.startswith("dbos-executor-")]
    assert executors
    assert all(spawned[n].attributes["spindle.thread.kind"] == "executor" for n in executors)

    registered = [s for s in spans if s.name == "spindle.stop_event.register"]
    assert len(registered) >= 2
    stop_sets = [s for s in spans if s.name == "spindle.stop_event.set"]
    assert len(stop_sets) == len(registered)
    joins = {s.attributes["thread.name"]: s for s in spans if s.name == "spindle.thread.join"}
    assert set(joins) == set(spawned)
    assert {j.attributes["spindle.join.outcome"] for j in joins.values()} == {"joined"}
    assert {s.attributes["thread.name"] for s in spans if s.name == "spindle.thread.exit"} == set(
        spawned
    )

    (shutdown,) = [s for s in spans if s.name == "spindle.shutdown"]
    # A thread that exits between two phases is a child of the shutdown span itself (by
    # design: each event goes under the phase running, else the shutdown): only the phase
    # spans are counted here.
    phases = sorted(
        (
            s
            for s in spans
            if s.parent_span_id == shutdown.span_id and s.name.startswith("spindle.shutdown.")
        ),
        key=lambda s: s.start_ns,
    )
    assert [p.name for p in phases] == [f"spindle.shutdown.{p}" for p in SHUTDOWN_PHASES]
    (close,) = [s for s in spans if s.name == "spindle.db.close"]
    assert close.attributes["spindle.db.name"] == "system"
    assert close.attributes["spindle.db.alive_threads"] == []
    assert close.parent_span_id == phases[-1].span_id
