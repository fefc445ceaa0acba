"""Diagnostics during a hung shutdown: the dashboard answers through the joins, and tells
which thread (and which workflow and step) the shutdown waits on."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spindle import DBOS
from spindle.diagnostics import ThreadKind, load_report
from spindle.runtime import _supervisor
from spindle.runtime._admin import bind_socket
from tests.conftest import MakeDBOS

release = threading.Event()
in_step = threading.Event()


@DBOS.step()
def slow_call() -> str:
    in_step.set()
    release.wait(60)
    return "done"


@DBOS.workflow()
def stuck_wf() -> str:
    return slow_call()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    release.clear()
    in_step.clear()
    yield
    release.set()  # whatever the test did, the step returns and its worker can exit


def _executor_rows(client: httpx.Client) -> list[dict[str, Any]]:
    threads = client.get("/dbos/threads.json", params={"kind": "executor"}).json()["threads"]
    return list(threads)


def test_executor_row_names_its_workflow_and_step_and_idle_workers_are_idle(
    make_dbos: MakeDBOS,
) -> None:
    """threads.json: the busy worker carries workflow id/name and step; the others are idle."""
    make_dbos(run_admin_server=True, admin_port=0, enable_diagnostics=True).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    # Two workers exist: one ran a quick workflow and went back to waiting for work.
    DBOS.start_workflow(stuck_wf)
    assert in_step.wait(10)
    with httpx.Client(base_url=url, timeout=10) as client:
        rows = _executor_rows(client)
        busy = [r for r in rows if r["workflow_id"] is not None]
        assert len(busy) == 1
        assert busy[0]["workflow_name"] == "stuck_wf"
        assert busy[0]["step_name"] == "slow_call"
        assert busy[0]["step_id"] == 1
        assert busy[0]["state"] in ("running", "waiting")
        detail = client.get(f"/dbos/threads/{busy[0]['id']}.json").json()
        assert detail["workflow_id"] == busy[0]["workflow_id"]
        page = client.get(f"/dbos/threads/{busy[0]['id']}").text
        assert "slow_call" in page
        assert busy[0]["workflow_id"] in page
        release.set()
        DBOS.retrieve_workflow(busy[0]["workflow_id"]).get_result()
        # The result is published just before the worker leaves the workflow: poll (each
        # poll a request) until it went back to waiting for work.
        for _ in range(1000):
            rows = _executor_rows(client)
            if all(r["workflow_id"] is None for r in rows):
                break
        assert rows
        assert all(r["state"] == "idle" and r["workflow_id"] is None for r in rows)
        idle = client.get(f"/dbos/threads/{rows[0]['id']}.json").json()
        assert idle["state"] == "idle"
        assert idle["workflow_id"] is None
        assert "idle" in client.get(f"/dbos/threads/{rows[0]['id']}").text
        counts = client.get("/dbos/threads.json").json()["counts"]["executor"]
        assert counts.get("idle") == len(rows)
        assert "running" not in counts


def test_dashboard_answers_while_destroy_joins_a_blocked_step(
    make_dbos: MakeDBOS, caplog: pytest.LogCaptureFixture
) -> None:
    """During join_threads: threads.json and shutdown.json answer 200, name the phase, the
    executor waited on and its workflow; management routes answer 503."""
    make_dbos(
        run_admin_server=True,
        admin_port=0,
        enable_diagnostics=True,
        thread_join_timeout_sec=30.0,
    ).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    handle = DBOS.start_workflow(stuck_wf)
    assert in_step.wait(10)
    destroyer = threading.Thread(target=DBOS.destroy, name="test-destroyer")
    polls = answered = 0
    live: dict[str, Any] | None = None
    with caplog.at_level(logging.WARNING, logger="spindle"):
        destroyer.start()
        with httpx.Client(base_url=url, timeout=10) as client:
            # Poll (each poll is a request: no sleep) until the join of the executor shows.
            for _ in range(5000):
                polls += 1
                r = client.get("/dbos/shutdown.json")
                answered += r.status_code == 200
                timelines = r.json()["timelines"]
                if timelines and timelines[0]["in_progress"]:
                    joining = (timelines[0]["progress"] or {}).get("joining")
                    if joining and joining["kind"] == "executor":
                        live = timelines[0]
                        break
            assert live is not None, "the live shutdown never showed the executor join"
            assert live["current_phase"] == "join_threads"
            assert live["ended_mono"] is None
            phase = live["phases"][-1]
            assert phase["name"] == "join_threads"
            assert phase["outcome"] == "running"
            assert phase["end_mono"] is None
            joining = live["progress"]["joining"]
            assert joining["workflow_id"] == handle.workflow_id
            assert joining["workflow_name"] == "stuck_wf"
            assert joining["step_name"] == "slow_call"
            assert joining["timeout_sec"] == 30.0
            assert any(f["function"] == "slow_call" for f in joining["stack"])
            assert joining["stack_captured_wall"] > live["started_wall"]
            threads = client.get("/dbos/threads.json")
            assert threads.status_code == 200
            rows = {t["name"]: t for t in threads.json()["threads"]}
            assert rows[joining["name"]]["workflow_id"] == handle.workflow_id
            page = client.get("/dbos/shutdown")
            assert page.status_code == 200
            assert "join_threads" in page.text
            assert joining["name"] in page.text
            # DBOS's management routes closed in phase 5.
            assert client.get("/dbos-healthz").status_code == 503
            for _ in range(25):  # the figure for the note: N of N polls answered
                for path in ("/dbos/threads.json", "/dbos/shutdown.json"):
                    polls += 1
                    answered += client.get(path).status_code == 200
            release.set()
        destroyer.join(30)
    assert not destroyer.is_alive()
    assert answered == polls
    print(f"dashboard answers during the join phase: {answered} of {polls} polls")
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    names = [p.name for p in timeline.phases]
    assert names.index("join_threads") < names.index("stop_dashboard")
    assert names.index("stop_dashboard") < names.index("close_databases")
    server = next(t for t in timeline.threads.values() if t.kind is ThreadKind.ADMIN_SERVER)
    joins = [
        e
        for e in timeline.events
        if e.record_id == server.record_id and e.type.value == "thread.join"
    ]
    assert [e.attrs["outcome"] for e in joins] == ["joined"]
    assert timeline.violations == []


def test_join_timeout_makes_the_phase_timeout_and_the_report_names_the_workflow(
    make_dbos: MakeDBOS,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    spindle_span_exporter: InMemorySpanExporter,
) -> None:
    """A join that timed out: join_threads ends `timeout`, naming the thread and workflow;
    the report, the violation, the log and the join span name the leaked executor's
    workflow and step; while it waits the log says so."""
    # Progress lines every 0.1 s instead of 3 s, so a 0.35 s join logs some.
    monkeypatch.setattr(_supervisor, "PROGRESS_EVERY_SEC", 0.1)
    report = tmp_path / "report.json"
    make_dbos(
        thread_join_timeout_sec=0.35, shutdown_report_path=str(report), enable_diagnostics=True
    ).launch()
    handle = DBOS.start_workflow(stuck_wf)
    assert in_step.wait(10)
    with caplog.at_level(logging.WARNING, logger="spindle"):
        DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    join = next(p for p in timeline.phases if p.name == "join_threads")
    assert join.outcome == "timeout"
    assert join.threads
    assert join.threads[0]["workflow_id"] == handle.workflow_id
    assert join.threads[0]["outcome"] == "timeout"
    assert all(p.outcome == "ok" for p in timeline.phases if p.name != "join_threads")
    [v] = [v for v in timeline.violations if v.rule == "join-timeout"]
    assert handle.workflow_id in v.message
    assert "slow_call" in v.message
    assert "ignored its stop event" not in v.message  # an executor has none
    data = json.loads(report.read_text())
    joined = next(p for p in data["phases"] if p["name"] == "join_threads")
    assert joined["outcome"] == "timeout"
    loaded = load_report(report)
    leaked = loaded.threads[v.thread_ids[0]]
    assert leaked.kind is ThreadKind.EXECUTOR
    assert leaked.workflow_id == handle.workflow_id
    [timed_out] = [
        e
        for e in loaded.events
        if e.record_id == leaked.record_id and e.type.value == "thread.join"
    ]
    assert timed_out.attrs["workflow_id"] == handle.workflow_id
    assert timed_out.attrs["step_name"] == "slow_call"
    assert "still alive after" in caplog.text
    assert handle.workflow_id in caplog.text
    progress = [
        r.getMessage() for r in caplog.records if "waiting on dbos-executor" in r.getMessage()
    ]
    assert progress, caplog.text
    assert f"(workflow stuck_wf {handle.workflow_id[:8]}…, step slow_call)" in progress[0]
    assert progress[0].endswith("s of 0.35 s")
    spans = spindle_span_exporter.get_finished_spans()
    [join_span] = [
        sp
        for sp in spans
        if sp.name == "spindle.thread.join"
        and (sp.attributes or {}).get("spindle.join.outcome") == "timeout"
    ]
    attrs = join_span.attributes or {}
    assert attrs["spindle.workflow.id"] == handle.workflow_id
    assert attrs["spindle.step.name"] == "slow_call"
    [phase_span] = [sp for sp in spans if sp.name == "spindle.shutdown.join_threads"]
    assert (phase_span.attributes or {})["spindle.phase.outcome"] == "timeout"
    release.set()


def test_the_admin_socket_lets_asyncio_disable_nagle() -> None:
    """The listening socket says IPPROTO_TCP, so asyncio sets TCP_NODELAY on each accepted
    connection (with proto 0 it does not: keep-alive responses waited ~40 ms on a delayed
    ACK). Checked on a connection asyncio itself accepts from it."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = writer.get_extra_info("socket")
            seen.append(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _reader.read()  # the server closes after looking at its socket
            writer.close()

    asyncio.run(main())
    assert seen == [1]
