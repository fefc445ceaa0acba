"""The /metrics families pushed over OTLP/HTTP to a real (in-test) OTLP receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from spindle import DBOS
from spindle.diagnostics import RULES, EventType, ThreadKind
from tests.conftest import MakeDBOS


class MetricsReceiver:
    """An OTLP/HTTP metrics endpoint on a free loopback port, keeping every request."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.received = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.received.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-metrics-rx")
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"

    def metrics(self) -> dict[str, Any]:
        """The last export's metrics by name."""
        out: dict[str, Any] = {}
        for rm in self.requests[-1].resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = m
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetricsReceiver]:
    rx = MetricsReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", rx.url)
    # A periodic export every 100 ms while the app runs (the test waits for the first).
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    try:
        yield rx
    finally:
        rx.close()


def _attrs(point: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def test_final_export_carries_the_shutdown(make_dbos: MakeDBOS, receiver: MetricsReceiver) -> None:
    """Launch starts dbos-metrics-exporter; destroy() pushes the families once every phase ran."""
    make_dbos(enable_diagnostics=True).launch()
    names = {t.name: t.kind for t in DBOS.thread_registry.snapshot().threads if t.state.alive}
    assert names["dbos-metrics-exporter"] is ThreadKind.METRICS
    # A periodic export while running: the database families are there.
    assert receiver.received.wait(10)
    running = receiver.metrics()
    statuses = {_attrs(p)["status"] for p in running["spindle_workflows_total"].gauge.data_points}
    assert "SUCCESS" in statuses
    assert running["spindle_system_database_up"].gauge.data_points[0].as_double == 1
    DBOS.destroy()
    # destroy() returned: its final export (after the last phase) is the last request.
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    metrics = receiver.metrics()
    assert {
        "spindle_threads",
        "spindle_foreign_threads",
        "spindle_thread_spawns",
        "spindle_thread_join_seconds",
        "spindle_shutdown_phase_seconds",
        "spindle_shutdown_violations",
        "spindle_executor_busy",
        "spindle_executor_size",
        "spindle_system_database_up",
    } <= set(metrics)
    # The databases are closed by then: no rows to count, and the export says so.
    assert metrics["spindle_system_database_up"].gauge.data_points[0].as_double == 0
    spawns = metrics["spindle_thread_spawns"].sum
    assert spawns.is_monotonic
    by_kind = {_attrs(p)["kind"]: p.as_double for p in spawns.data_points}
    assert by_kind["metrics"] == 1
    phases = {
        _attrs(p)["phase"]: p.as_double
        for p in metrics["spindle_shutdown_phase_seconds"].gauge.data_points
    }
    assert set(phases) == {p.name for p in timeline.phases}
    joins = metrics["spindle_thread_join_seconds"].histogram.data_points
    joined = sum(p.count for p in joins)
    assert joined == sum(1 for e in timeline.events if e.type is EventType.JOIN)
    assert joined > 0
    rules = {_attrs(p)["rule"] for p in metrics["spindle_shutdown_violations"].sum.data_points}
    assert rules == set(RULES)
    # Every runtime thread was joined: none is live any more.
    live = sum(p.as_double for p in metrics["spindle_threads"].gauge.data_points)
    assert live == 0
    resource = {
        kv.key: kv.value.string_value
        for kv in receiver.requests[-1].resource_metrics[0].resource.attributes
    }
    assert resource["service.name"] == "spindle-test"


def test_no_endpoint_no_exporter_thread(
    make_dbos: MakeDBOS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an OTLP endpoint nothing is started (and never with diagnostics off)."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    make_dbos(enable_diagnostics=True).launch()
    kinds = {t.kind for t in DBOS.thread_registry.snapshot().threads}
    assert ThreadKind.METRICS not in kinds
