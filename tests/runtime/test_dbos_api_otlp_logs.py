"""DBOS's OTLP log export: with enable_otlp and otlp_logs_endpoints, DBOS.logger's records
reach a real OTLP/HTTP receiver; destroy() flushes them and leaves no exporter thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from spindle import DBOS
from tests.conftest import MakeDBOS


class LogReceiver:
    """A real OTLP/HTTP log receiver on 127.0.0.1 (port 0), decoding each request."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, str]]] = []
        self.resources: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                for rl in request.resource_logs:
                    attrs = {a.key: a.value.string_value for a in rl.resource.attributes}
                    receiver.resources.append(attrs)
                    for sl in rl.scope_logs:
                        for rec in sl.log_records:
                            receiver.records.append((rec.body.string_value, attrs))
                payload = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/logs"
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-otlp-logs")
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def log_receiver() -> Iterator[LogReceiver]:
    receiver = LogReceiver()
    yield receiver
    receiver.close()


def test_dbos_logger_records_reach_the_otlp_endpoint(
    make_dbos: MakeDBOS, log_receiver: LogReceiver
) -> None:
    """A record of DBOS.logger at or above otlp_log_level is exported (with the app's name
    and otlp_attributes on its resource); a lower one is not; destroy flushes."""
    make_dbos(
        name="shop",
        enable_otlp=True,
        otlp_logs_endpoints=[log_receiver.url],
        otlp_log_level="WARNING",
        otlp_attributes={"team": "payments"},
    ).launch()
    DBOS.logger.warning("stock is low")
    DBOS.logger.info("not exported: below otlp_log_level")
    DBOS.destroy()
    bodies = [body for body, _ in log_receiver.records]
    assert "stock is low" in bodies
    assert "not exported: below otlp_log_level" not in bodies
    resource = log_receiver.records[bodies.index("stock is low")][1]
    assert (resource["service.name"], resource["team"]) == ("shop", "payments")
    assert DBOS.runtime.log_export is None


def test_no_export_without_enable_otlp(make_dbos: MakeDBOS, log_receiver: LogReceiver) -> None:
    """Endpoints alone do nothing: DBOS exports logs only with enable_otlp."""
    make_dbos(otlp_logs_endpoints=[log_receiver.url]).launch()
    assert DBOS.runtime.log_export is None
