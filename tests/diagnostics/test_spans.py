"""Lifecycle events as spans: in memory, to a real OTLP receiver, and from a dying process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spindle.diagnostics import (
    SHUTDOWN_PHASES,
    DiagnosticsSession,
    SpanExportConfigError,
    StopEvent,
    ThreadGroup,
    ThreadKind,
    ThreadRegistry,
)
from spindle.runtime._supervisor import Supervisor

from .conftest import OtlpReceiver, ReceivedSpan, ShutdownScenario

ROOT = Path(__file__).resolve().parents[2]


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The finished spans called ``name``."""
    return [s for s in spans if s.name == name]


def test_disabled_session_has_no_listener_no_thread_and_a_noop_tracer(
    registry: ThreadRegistry, spindle_span_exporter: InMemorySpanExporter
) -> None:
    before = {t.ident for t in threading.enumerate()}
    session = DiagnosticsSession(registry, service_name="shop", enabled=False)
    assert registry._listeners == []
    assert isinstance(session.tracer, trace.NoOpTracer)
    assert not session.exporting
    assert {t.ident for t in threading.enumerate()} == before
    registry.new_stop_event("dbos-x", ThreadGroup.INTERNAL).set()
    assert session.shutdown() is True
    assert spindle_span_exporter.get_finished_spans() == ()


def test_every_lifecycle_event_becomes_a_span_with_thread_attributes(
    registry: ThreadRegistry,
    scenario: ShutdownScenario,
    spindle_span_exporter: InMemorySpanExporter,
) -> None:
    session = DiagnosticsSession(registry, service_name="shop", enabled=True)
    assert session.exporting
    # Threads made before the session are in the registry, not in spans; make one now.
    late = scenario.supervisor.spawn(ThreadKind.SCHEDULER, "dbos-dyn-scheduler", _wait_for_stop)
    timeline = scenario.run(session=session)
    assert timeline.violations == []
    assert session.shutdown() is True
    spans = list(spindle_span_exporter.get_finished_spans())

    (spawn,) = [s for s in by_name(spans, "spindle.thread.spawn")]
    attrs = dict(spawn.attributes or {})
    assert attrs["thread.name"] == "dbos-dyn-scheduler"
    assert attrs["spindle.thread.kind"] == "scheduler"
    assert attrs["spindle.thread.group"] == "internal"
    (register,) = by_name(spans, "spindle.stop_event.register")
    assert (register.attributes or {})["spindle.stop_event.name"] == "dbos-dyn-scheduler"

    sets = by_name(spans, "spindle.stop_event.set")
    assert {(s.attributes or {})["thread.name"] for s in sets} == {
        "dbos-scheduled[nightly]",
        "dbos-queue-manager",
        "dbos-timeout",
        "dbos-dyn-scheduler",
    }
    exits = by_name(spans, "spindle.thread.exit")
    assert len(exits) == 4
    joins = by_name(spans, "spindle.thread.join")
    assert len(joins) == 4
    for j in joins:
        a = dict(j.attributes or {})
        assert a["spindle.join.outcome"] == "joined"
        assert float(str(a["spindle.join.duration_s"])) >= 0
        assert isinstance(a["thread.id"], int)
        assert j.start_time is not None
        assert j.end_time is not None
        assert j.end_time >= j.start_time
    late_join = next(j for j in joins if (j.attributes or {})["thread.name"] == late.name)
    assert (late_join.attributes or {})["thread.id"] == late.thread.ident
    closes = by_name(spans, "spindle.db.close")
    assert [(c.attributes or {})["spindle.db.name"] for c in closes] == ["system", "application"]
    assert all(tuple((c.attributes or {})["spindle.db.alive_threads"]) == () for c in closes)  # type: ignore[arg-type]

    (shutdown,) = by_name(spans, "spindle.shutdown")
    assert shutdown.context is not None
    # Children of the shutdown span: the ten phases, and events between two phases.
    phases = sorted(
        (
            s
            for s in spans
            if s.parent is not None
            and s.parent.span_id == shutdown.context.span_id
            and s.name.startswith("spindle.shutdown.")
        ),
        key=lambda s: s.start_time or 0,
    )
    assert [s.name for s in phases] == [f"spindle.shutdown.{p}" for p in SHUTDOWN_PHASES]
    assert [(s.attributes or {})["spindle.phase.index"] for s in phases] == list(
        range(1, len(SHUTDOWN_PHASES) + 1)
    )
    assert all((s.attributes or {})["spindle.phase.outcome"] == "ok" for s in phases)
    # Events during shutdown are children of the phase they happened in.
    join_phase = next(s for s in phases if s.name == "spindle.shutdown.join_threads")
    assert join_phase.context is not None
    assert all(
        j.parent is not None and j.parent.span_id == join_phase.context.span_id for j in joins
    )
    assert (shutdown.attributes or {})["spindle.shutdown.violations"] == 0


def test_violations_and_stuck_stacks_are_attached_to_their_spans(
    registry: ThreadRegistry,
    scenario: ShutdownScenario,
    spindle_span_exporter: InMemorySpanExporter,
) -> None:
    session = DiagnosticsSession(registry, service_name="shop", enabled=True)
    release = threading.Event()

    def ignores_stop(stop: StopEvent) -> None:
        release.wait()

    stubborn = scenario.supervisor.spawn(ThreadKind.CONDUCTOR, "dbos-conductor", ignores_stop)
    scenario.join_timeout = 0.2
    try:
        timeline = scenario.run(session=session)
    finally:
        release.set()
        stubborn.thread.join(10)
    session.shutdown()
    spans = list(spindle_span_exporter.get_finished_spans())
    (shutdown,) = by_name(spans, "spindle.shutdown")
    events = [(e.name, dict(e.attributes or {})) for e in shutdown.events]
    assert {a["spindle.violation.rule"] for _, a in events} == {v.rule for v in timeline.violations}
    assert all(name == "spindle.violation" for name, _ in events)
    timeout_event = next(a for _, a in events if a["spindle.violation.rule"] == "join-timeout")
    assert tuple(timeout_event["spindle.violation.threads"]) == ("dbos-conductor",)  # type: ignore[arg-type]
    assert timeout_event["spindle.violation.phase"] == "join_threads"
    assert "ignores_stop" in str(timeout_event["spindle.violation.stacks"])
    join = next(
        s
        for s in by_name(spans, "spindle.thread.join")
        if (s.attributes or {})["thread.name"] == "dbos-conductor"
    )
    assert (join.attributes or {})["spindle.join.outcome"] == "timeout"
    (stack_event,) = join.events
    assert stack_event.name == "spindle.thread.stack"
    assert "ignores_stop" in str((stack_event.attributes or {})["spindle.stack"])


def test_a_failing_span_path_never_raises_into_the_runtime(
    registry: ThreadRegistry, supervisor: Supervisor, spindle_span_exporter: InMemorySpanExporter
) -> None:
    session = DiagnosticsSession(registry, service_name="shop", enabled=True)
    assert session._spans is not None
    assert session._spans.emitter is not None

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter on fire")

    session._spans.emitter._tracer.start_span = broken  # type: ignore[method-assign,assignment]
    s = supervisor.spawn(ThreadKind.QUEUE, "dbos-queue", _wait_for_stop)
    s.stop.set()
    assert supervisor.reap(s, 10)
    assert session.shutdown() is True


def _wait_for_stop(stop: StopEvent) -> None:
    stop.wait()


# -- a real OTLP receiver ------------------------------------------------------------------------


def _phase_children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    children = [
        s
        for s in spans
        if s.parent_span_id == parent.span_id and s.name.startswith("spindle.shutdown.")
    ]
    return sorted(children, key=lambda s: s.start_ns)


def _has_shutdown(spans: list[ReceivedSpan]) -> bool:
    return any(s.name == "spindle.shutdown" for s in spans)


def test_spans_reach_an_otlp_receiver_with_attributes_and_phase_children(
    registry: ThreadRegistry, scenario: ShutdownScenario, otlp_receiver: OtlpReceiver
) -> None:
    session = DiagnosticsSession(
        registry, service_name="shop", enabled=True, otlp_traces_endpoints=[otlp_receiver.url]
    )
    late = scenario.supervisor.spawn(ThreadKind.SCHEDULER, "dbos-dyn-scheduler", _wait_for_stop)
    scenario.run(session=session)
    assert session.shutdown(timeout_sec=30) is True
    # shutdown() flushed: everything is there already, no waiting needed.
    spans = list(otlp_receiver.spans)
    names = {s.name for s in spans}
    assert {
        "spindle.thread.spawn",
        "spindle.stop_event.register",
        "spindle.stop_event.set",
        "spindle.thread.exit",
        "spindle.thread.join",
        "spindle.db.interrupt",
        "spindle.db.close",
        "spindle.shutdown",
    } <= names
    assert all(s.resource["service.name"] == "shop" for s in spans)
    (shutdown,) = [s for s in spans if s.name == "spindle.shutdown"]
    phases = _phase_children(spans, shutdown)
    assert [p.name for p in phases] == [f"spindle.shutdown.{p}" for p in SHUTDOWN_PHASES]
    spawn = next(s for s in spans if s.name == "spindle.thread.spawn")
    assert spawn.attributes["thread.name"] == late.name
    assert spawn.attributes["spindle.thread.kind"] == "scheduler"
    join = next(
        s
        for s in spans
        if s.name == "spindle.thread.join" and s.attributes["thread.name"] == late.name
    )
    assert join.attributes["thread.id"] == late.thread.ident
    assert join.attributes["spindle.join.outcome"] == "joined"
    closes = [s for s in spans if s.name == "spindle.db.close"]
    assert {c.attributes["spindle.db.name"] for c in closes} == {"system", "application"}
    assert all(c.attributes["spindle.db.alive_threads"] == [] for c in closes)
    assert all(s.trace_id == shutdown.trace_id for s in phases)


def test_endpoint_from_the_standard_environment_variable(
    registry: ThreadRegistry,
    supervisor: Supervisor,
    otlp_receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.base_url)
    session = DiagnosticsSession(registry, service_name="env-app", enabled=True)
    s = supervisor.spawn(ThreadKind.QUEUE, "dbos-queue", _wait_for_stop)
    s.stop.set()
    supervisor.reap(s, 10)
    assert session.shutdown(timeout_sec=30)
    names = [x.name for x in otlp_receiver.spans]
    assert "spindle.thread.join" in names
    assert otlp_receiver.spans[0].resource["service.name"] == "env-app"


def test_grpc_protocol_without_the_grpc_extra_is_a_clear_error(
    registry: ThreadRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the grpc extra is installed here")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(
        SpanExportConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL=grpc.*spindle\[grpc\]"
    ):
        DiagnosticsSession(
            registry, service_name="shop", enabled=True, otlp_traces_endpoints=["http://x:4317"]
        )


def test_unsupported_protocol_names_the_variable(
    registry: ThreadRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(SpanExportConfigError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        DiagnosticsSession(
            registry, service_name="shop", enabled=True, otlp_traces_endpoints=["http://x"]
        )


@pytest.mark.slow
def test_shutdown_honours_its_timeout_when_the_collector_hangs(
    registry: ThreadRegistry, supervisor: Supervisor, otlp_receiver: OtlpReceiver
) -> None:
    session = DiagnosticsSession(
        registry, service_name="shop", enabled=True, otlp_traces_endpoints=[otlp_receiver.url]
    )
    otlp_receiver.hold()
    s = supervisor.spawn(ThreadKind.QUEUE, "dbos-queue", _wait_for_stop)
    s.stop.set()
    supervisor.reap(s, 10)
    started = time.monotonic()
    try:
        assert session.shutdown(timeout_sec=1.0) is False
        assert time.monotonic() - started < 3.0
        assert session.shutdown(timeout_sec=1.0) is True  # idempotent: already shut down
    finally:
        # The export in flight completes once the collector answers; the helper thread ends.
        otlp_receiver.release()
        for t in threading.enumerate():
            if t.name == "otel-export-shutdown[spindle]":
                t.join(30)


CHILD = textwrap.dedent(
    """
    import atexit, sys, threading
    from spindle.diagnostics import (
        SHUTDOWN_PHASES, DiagnosticsSession, EventType, ShutdownRecorder, ThreadGroup,
        ThreadKind, ThreadRegistry,
    )
    from spindle.runtime._supervisor import Supervisor

    registry = ThreadRegistry()
    session = DiagnosticsSession(
        registry, service_name="child-app", enabled=True, otlp_traces_endpoints=[sys.argv[1]]
    )
    supervisor = Supervisor(registry)
    for i in range(3):
        supervisor.spawn(ThreadKind.QUEUE, f"dbos-queue-worker[{i}]", lambda stop: stop.wait())
    supervisor.spawn(
        ThreadKind.POLLER, "dbos-scheduled[cron]", lambda stop: stop.wait(),
        group=ThreadGroup.POLLER,
    )

    def destroy():
        recorder = ShutdownRecorder(registry, service="child-app")
        recorder.begin()
        for name in SHUTDOWN_PHASES:
            with recorder.phase(name):
                if name == "signal_pollers":
                    supervisor.signal(ThreadGroup.POLLER)
                elif name == "signal_internal":
                    supervisor.signal(ThreadGroup.INTERNAL)
                elif name == "interrupt_db":
                    registry.emit(EventType.DB_INTERRUPT, None, database="system")
                elif name == "join_threads":
                    for s in supervisor.threads():
                        supervisor.reap(s, 10)
                elif name == "close_databases":
                    for db in ("system", "application"):
                        registry.emit(EventType.DB_CLOSE, None, database=db, alive_threads=[])
        session.record_timeline(recorder.finish())
        session.shutdown(timeout_sec=20)

    atexit.register(destroy)
    print("ready", flush=True)
    """
)


@pytest.mark.slow
def test_nothing_is_lost_when_a_child_process_exits_through_atexit(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = subprocess.run(
        [sys.executable, str(script), otlp_receiver.url],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ready"
    # The child has exited: whatever it sent has been received (its flush waited for answers).
    spans = list(otlp_receiver.spans)
    names = [s.name for s in spans]
    assert names.count("spindle.thread.spawn") == 4
    assert names.count("spindle.stop_event.register") == 4
    assert names.count("spindle.stop_event.set") == 4
    assert names.count("spindle.thread.exit") == 4
    assert names.count("spindle.thread.join") == 4
    assert names.count("spindle.db.close") == 2
    (shutdown,) = [s for s in spans if s.name == "spindle.shutdown"]
    assert [p.name for p in _phase_children(spans, shutdown)] == [
        f"spindle.shutdown.{p}" for p in SHUTDOWN_PHASES
    ]
    assert {s.resource["service.name"] for s in spans} == {"child-app"}
    assert json.loads(json.dumps(shutdown.attributes))["spindle.shutdown.violations"] == 0


def test_app_global_provider_is_used_and_never_shut_down(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from spindle.diagnostics import DiagnosticsSession, ThreadGroup, ThreadRegistry

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        registry = ThreadRegistry()
        session = DiagnosticsSession(
            registry, service_name="x", enabled=True, otlp_traces_endpoints=["http://127.0.0.1:9"]
        )
        registry.new_stop_event("dbos-x", ThreadGroup.INTERNAL).set()
        session.shutdown()
        # A provider that was shut down drops new spans; the app's must still work.
        trace.get_tracer("app").start_span("app-span").end()
        print(json.dumps([s.name for s in exporter.get_finished_spans()]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert json.loads(out.stdout) == [
        "spindle.stop_event.register",
        "spindle.stop_event.set",
        "app-span",
    ]


def test_enabled_without_any_endpoint_or_provider_exports_nothing_and_starts_nothing(
    registry: ThreadRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    before = {t.ident for t in threading.enumerate()}
    session = DiagnosticsSession(registry, service_name="shop", enabled=True)
    assert not session.exporting
    assert registry._listeners == []
    assert {t.ident for t in threading.enumerate()} == before
    assert session.shutdown() is True
