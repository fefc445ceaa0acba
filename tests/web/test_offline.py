"""The offline viewer: a saved shutdown report served with no app running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from spindle.diagnostics import DiagnosticsSession, load_report
from spindle.web import ReportSource
from spindle.web.__main__ import main
from spindle.web._app import build_app

from .conftest import Runtime, record_shutdown

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def report(runtime: Runtime, tmp_path: Path) -> Path:
    """A report JSON written by a session's report_path, with an ordering fault in it."""
    path = tmp_path / "shutdown.json"
    runtime.session = DiagnosticsSession(
        runtime.registry, service_name="shop", enabled=True, report_path=str(path)
    )
    record_shutdown(runtime, fault=True)
    assert path.is_file()
    return path


def test_report_app_serves_the_same_shutdown_view(report: Path) -> None:
    """A report loaded back draws the same violation, and / goes to /shutdown."""
    app = build_app(ReportSource([load_report(report)]), allow_pyspy=False, home="shutdown")
    with TestClient(app) as c:
        assert c.get("/", follow_redirects=False).headers["location"] == "/shutdown"
        html = c.get("/shutdown").text
        assert '<article class="violation" data-rule="db-closed-while-thread-alive">' in html
        assert 'class="label thread violation">dbos-stuck-listener' in html
        assert "stack of dbos-stuck-listener" in html
        data = c.get("/shutdown.json").json()
        assert data["service"] == "shop"
        assert len(data["timelines"]) == 1
        # The threads are the report's (not the viewer's own), as the shutdown left them.
        loaded = load_report(report)
        threads = c.get("/threads.json").json()
        assert threads["total"] == len(loaded.threads) > 0
        assert {t["name"] for t in threads["threads"]} == {t.name for t in loaded.threads.values()}
        assert "dbos-stuck-listener" in c.get("/threads").text
        assert not any(t["kind"] == "foreign" for t in threads["threads"])
        history = c.get("/history.json").json()
        assert {s["name"] for s in history["threads"]} >= {"dbos-stuck-listener"}
        assert all(s["segments"] for s in history["threads"])
        one = threads["threads"][0]
        detail = c.get(f"/threads/{one['id']}.json").json()
        assert detail["stack_source"] in ("captured", "none")  # never the viewer's live stack


def test_main_refuses_a_missing_or_broken_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is missing, not JSON or not a report is exit status 2 with the reason."""
    assert main([str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main([str(bad)]) == 2
    bad.write_text(json.dumps({"schema_version": 999}))
    assert main([str(bad)]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_python_m_spindle_web_serves_a_report(report: Path) -> None:
    """``python -m spindle.web REPORT --port 0`` announces its URL and serves /shutdown."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spindle.web", str(report), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until the server listens (or dies)
        assert line.startswith("spindle.web: serving http://127.0.0.1:"), line
        url = line.split("serving ", 1)[1].strip()
        with urllib.request.urlopen(url, timeout=10) as r:
            html = r.read().decode()
        assert "db-closed-while-thread-alive" in html
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
