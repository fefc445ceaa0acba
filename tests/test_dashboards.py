"""``dashboards/``: the JSON parses, its queries name what the runtime really exposes and emits,
and the compose files publish the ports their README names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from spindle import DBOS
from tests.conftest import MakeDBOS

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
PROMETHEUS_JSON = DASHBOARDS / "grafana" / "dashboards" / "spindle-prometheus.json"
TEMPO_JSON = DASHBOARDS / "grafana" / "dashboards" / "spindle-tempo.json"

#: Sample names a family of each type produces in the text format.
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


def _targets(path: Path) -> list[dict[str, Any]]:
    dashboard = json.loads(path.read_text())
    assert dashboard["panels"], path
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(t.get("refId") for t in targets)
    return targets


def promql_metric_names() -> set[str]:
    """Every ``spindle_*`` name in the Prometheus dashboard's queries."""
    names: set[str] = set()
    for target in _targets(PROMETHEUS_JSON):
        names |= set(re.findall(r"\b(spindle_[a-z_]+)\b", target["expr"]))
    return names


def traceql_queries() -> list[str]:
    """The Tempo dashboard's TraceQL queries."""
    targets = _targets(TEMPO_JSON)
    assert all(t["queryType"] == "traceql" for t in targets)
    return [str(t["query"]) for t in targets]


def test_dashboards_parse_and_every_panel_has_a_query() -> None:
    """Both dashboards are JSON with panels, each with at least one query, unique ids."""
    for path in (PROMETHEUS_JSON, TEMPO_JSON):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        assert all(p["targets"] for p in dashboard["panels"])
    assert len(promql_metric_names()) >= 10
    assert len(traceql_queries()) >= 3


def test_every_promql_metric_is_exposed_by_a_running_app(make_dbos: MakeDBOS) -> None:
    """Each name in a PromQL query is a sample name /metrics of a running app can produce."""
    make_dbos(run_admin_server=True, admin_port=0).launch()
    text = httpx.get(f"{DBOS.runtime.admin_url}/metrics", timeout=10).text
    exposable = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in _SUFFIXES[family.type]
    }
    missing = promql_metric_names() - exposable
    assert missing == set()


def test_every_traceql_attribute_is_on_an_emitted_span(
    make_dbos: MakeDBOS, spindle_span_exporter: InMemorySpanExporter
) -> None:
    """Span names and span/resource attributes in TraceQL exist on spans the runtime emits.

    The fault closes the database under live threads, so the shutdown has violations and the
    database close names them: every query has something to match.
    """
    make_dbos(enable_diagnostics=True, diagnostics_fault="close_db_before_join").launch()
    DBOS.destroy()
    spans = spindle_span_exporter.get_finished_spans()
    names = {s.name for s in spans}
    span_keys = {k for s in spans for k in (s.attributes or {})}
    resource_keys = {k for s in spans for k in s.resource.attributes}
    wanted_names: set[str] = set()
    wanted_span: set[str] = set()
    wanted_resource: set[str] = set()
    for query in traceql_queries():
        wanted_names |= set(re.findall(r'\bname\s*=\s*"([^"]+)"', query))
        wanted_span |= set(re.findall(r"\bspan\.([A-Za-z0-9_.]+)", query))
        wanted_resource |= set(re.findall(r"\bresource\.([A-Za-z0-9_.]+)", query))
    assert wanted_names
    assert wanted_span
    assert wanted_names - names == set()
    assert wanted_span - span_keys == set()
    assert wanted_resource - resource_keys == set()
    shutdown = next(s for s in spans if s.name == "spindle.shutdown")
    violations = (shutdown.attributes or {})["spindle.shutdown.violations"]
    assert isinstance(violations, int)
    assert violations > 0


def _published(compose: Path) -> set[int]:
    data = yaml.safe_load(compose.read_text())
    ports: set[int] = set()
    for service in data["services"].values():
        for mapping in service.get("ports", []):
            ports.add(int(str(mapping).split(":")[0]))
    return ports


def _readme_ports(section: str) -> set[int]:
    text = (DASHBOARDS / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return {int(p) for p in re.findall(r"^\| `(\d+)` \|", body, flags=re.MULTILINE)}


@pytest.mark.parametrize(
    ("section", "compose"),
    [
        ("Jaeger", DASHBOARDS / "jaeger" / "docker-compose.yml"),
        ("Prometheus + Tempo + Grafana", DASHBOARDS / "grafana" / "docker-compose.yml"),
    ],
)
def test_compose_files_publish_the_readme_ports(section: str, compose: Path) -> None:
    """Each compose file is YAML and publishes exactly the ports its README table lists."""
    readme = _readme_ports(section)
    assert readme
    assert _published(compose) == readme


def test_grafana_provisioning_and_scrape_config_parse() -> None:
    """The provisioning files, Prometheus' scrape config and Tempo's config are YAML that
    point at /metrics on the admin port and at the dashboards folder."""
    grafana = DASHBOARDS / "grafana"
    scrape = yaml.safe_load((grafana / "prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["host.docker.internal:3001"]
    assert job["authorization"]["credentials"]
    tempo = yaml.safe_load((grafana / "tempo.yaml").read_text())
    assert tempo["server"]["http_listen_port"] == 3200
    sources = yaml.safe_load((grafana / "provisioning/datasources/datasources.yml").read_text())
    assert {d["type"] for d in sources["datasources"]} == {"prometheus", "tempo"}
    providers = yaml.safe_load((grafana / "provisioning/dashboards/dashboards.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((grafana / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./dashboards:/var/lib/grafana/dashboards:ro" in mounts
