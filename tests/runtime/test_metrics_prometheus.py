"""A real Prometheus server (Debian's ``prometheus``) scrapes the admin server's /metrics."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from spindle import DBOS
from spindle.diagnostics import ThreadKind
from tests.conftest import MakeDBOS

TOKEN = "scrape-token"
PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def dashboard_queries() -> list[str]:
    """The Prometheus dashboard's queries with Grafana's variables filled in."""
    path = (
        Path(__file__).resolve().parents[2]
        / "dashboards/grafana/dashboards/spindle-prometheus.json"
    )
    panels = json.loads(path.read_text())["panels"]
    exprs = [str(t["expr"]) for p in panels for t in p["targets"]]
    return [
        e.replace("$job", "spindle").replace("$instance", ".*").replace("$__rate_interval", "1m")
        for e in exprs
    ]


def _query(client: httpx.Client, promql: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/query", params={"query": promql})
    if response.status_code == 503:
        return []  # still starting up (reading its storage)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.slow
@pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"
)
def test_prometheus_scrapes_spindle_threads(make_dbos: MakeDBOS, tmp_path: Path) -> None:
    """Prometheus, given the admin token, scrapes /metrics; sum(spindle_threads) is the
    registry's live runtime threads."""
    assert PROMETHEUS is not None
    make_dbos(run_admin_server=True, admin_port=0, admin_token=TOKEN).launch()
    admin = DBOS.runtime.admin
    assert admin is not None
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: spindle\n"
        "    authorization:\n"
        f"      credentials: {TOKEN}\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{admin.port}']\n"
    )
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            # Prometheus offers no "scraped" notification: ask its API until the first scrape
            # is in (bounded by a deadline, not a sleep of a guessed length).
            deadline = time.monotonic() + 60
            result: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                try:
                    result = _query(client, 'sum(spindle_threads{job="spindle"})')
                except httpx.TransportError:
                    result = []  # not listening yet
                if result:
                    break
                try:
                    code = server.wait(0.2)  # between polls: returns at once if it died
                except subprocess.TimeoutExpired:
                    continue
                pytest.fail(f"prometheus exited with status {code}")
            assert result, "Prometheus never stored a spindle_threads sample"
            snapshot = DBOS.thread_registry.snapshot()
            live = [
                t for t in snapshot.threads if t.state.alive and t.kind is not ThreadKind.FOREIGN
            ]
            assert float(result[0]["value"][1]) == len(live)
            up = _query(client, 'up{job="spindle"}')
            assert float(up[0]["value"][1]) == 1.0
            kinds = _query(client, 'sum by (kind) (spindle_threads{job="spindle"})')
            assert {r["metric"]["kind"] for r in kinds} >= {"admin_server", "queue", "timeout"}
            # Every query of the Grafana dashboard is PromQL this Prometheus accepts.
            for expr in dashboard_queries():
                response = client.get("/api/v1/query", params={"query": expr})
                assert response.status_code == 200, (expr, response.text)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
