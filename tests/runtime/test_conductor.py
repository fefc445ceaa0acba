"""The conductor client (thread kind 8) against a real websocket server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spindle import DBOS, DBOSConfigError, Queue
from spindle.diagnostics import JoinOutcome, ThreadKind
from spindle.runtime._conductor import (
    ConductorClient,
    backoff_delay,
    conductor_websocket_url,
)
from spindle.runtime._config import load_config
from spindle.runtime._queue import GLOBAL_QUEUES
from tests.conftest import MakeDBOS
from tests.runtime.conductor_server import LoopbackConductor, SilentConductor

release = threading.Event()
entered = threading.Event()


@pytest.fixture(autouse=True)
def _reset_events() -> Iterator[None]:
    release.clear()
    entered.clear()
    yield
    release.set()


@DBOS.step()
def wait_for_release() -> str:
    entered.set()
    release.wait(30)
    return "released"


@DBOS.workflow()
def blocked() -> str:
    first = wait_for_release()
    second = wait_for_release()
    return first + second


@DBOS.step()
def double(x: int) -> int:
    return 2 * x


@DBOS.workflow()
def doubling(x: int) -> int:
    return double(x)


@DBOS.workflow()
def eventful() -> str:
    DBOS.set_event("color", "blue")
    return "set"


@DBOS.workflow()
def conductor_tick(scheduled_time: datetime, context: Any) -> None:
    pass


@pytest.fixture
def conductor() -> Iterator[LoopbackConductor]:
    server = LoopbackConductor()
    yield server
    server.stop()


def _conductor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dbos-conductor" and t.is_alive()]


def test_connects_at_the_websocket_path_and_answers_dbos_requests(
    make_dbos: MakeDBOS, conductor: LoopbackConductor
) -> None:
    """Path keeps the URL's prefix; executor_info, list/get workflows, steps, unknown type,
    a bad field and thread_dump each get one reply, and the connection stays open."""
    dbos = make_dbos(
        conductor_url=conductor.url + "/prefix/", conductor_key="key-1", application_version="v7"
    )
    dbos.launch()
    session = conductor.next_session()
    assert session.path == "/prefix/websocket/spindle-test/key-1"

    info = session.request("executor_info")
    assert info["error_message"] is None
    assert info["executor_id"] == "local"
    assert info["application_version"] == "v7"
    assert info["hostname"]
    assert info["language"] == "python"

    handle = DBOS.start_workflow(doubling, 21)
    assert handle.get_result() == 42
    listed = session.request("list_workflows", body={"load_output": True})
    assert listed["error_message"] is None
    [wf] = [w for w in listed["output"] if w["WorkflowUUID"] == handle.workflow_id]
    assert wf["Status"] == "SUCCESS"
    assert wf["WorkflowName"].endswith("doubling")
    assert wf["Output"] == "42"
    assert wf["ExecutorID"] == "local"

    got = session.request("get_workflow", workflow_id=handle.workflow_id)
    assert got["output"]["WorkflowUUID"] == handle.workflow_id
    assert got["output"]["Status"] == "SUCCESS"
    assert session.request("get_workflow", workflow_id="nope")["output"] is None

    steps = session.request("list_steps", workflow_id=handle.workflow_id)
    assert [s["function_name"].rsplit(".", 1)[-1] for s in steps["output"]] == ["double"]
    assert steps["output"][0]["output"] == "42"

    unknown = session.request("make_coffee", strength=3)
    assert unknown["error_message"] == "Unknown message type"
    bad = session.request("cancel")
    assert bad["success"] is False
    assert "missing field 'workflow_id'" in bad["error_message"]
    unsupported = session.request("export_workflow", workflow_id=handle.workflow_id)
    assert "does not support" in unsupported["error_message"]

    # A frame that is no request cannot be answered (no request_id), and costs nothing.
    session.conn.send("not json")
    session.conn.send(b'{"type": "executor_info"}')
    # Still the same connection: the errors cost nothing.
    dump = session.request("thread_dump")
    assert dump["error_message"] is None
    [me] = [t for t in dump["threads"] if t["name"] == "dbos-conductor"]
    assert me["kind"] == ThreadKind.CONDUCTOR.value
    assert me["group"] == "internal"
    assert "connected to" in me["status_note"]
    assert "key-1" not in me["status_note"]  # the key is a secret
    assert any(s["name"] == "dbos-conductor" and s["frames"] for s in dump["stacks"])
    assert DBOS.runtime.conductor is not None
    assert isinstance(DBOS.runtime.conductor, ConductorClient)
    assert DBOS.runtime.conductor.connections == 1


def test_cancel_over_the_conductor_cancels_a_blocked_workflow(
    make_dbos: MakeDBOS, conductor: LoopbackConductor
) -> None:
    """A workflow blocked in a step is CANCELLED by a ``cancel`` request and stops there."""
    make_dbos(conductor_url=conductor.url, conductor_key="k").launch()
    session = conductor.next_session()
    handle = DBOS.start_workflow(blocked)
    assert entered.wait(10)
    answer = session.request("cancel", workflow_id=handle.workflow_id)
    assert answer == {
        "type": "cancel",
        "request_id": answer["request_id"],
        "success": True,
        "error_message": None,
    }
    status = session.request("get_workflow", workflow_id=handle.workflow_id)["output"]["Status"]
    assert status == "CANCELLED"
    entered.clear()
    release.set()
    # The second step never runs: the workflow stopped at its next boundary.
    assert not entered.wait(0.5)
    assert handle.get_status().status == "CANCELLED"
    queued = session.request("list_queued_workflows", body={})
    assert queued["output"] == []


def test_every_other_answered_type_has_its_effect_and_shape(
    make_dbos: MakeDBOS, conductor: LoopbackConductor
) -> None:
    """fork, restart, resume, delete, exist_pending, retention, get_metrics, schedules,
    queues, events and notifications: each does what DBOS's does, in DBOS's reply fields."""
    if GLOBAL_QUEUES.get("conductor-q") is None:
        Queue("conductor-q", concurrency=3, limiter={"limit": 5, "period": 2.0})
    make_dbos(conductor_url=conductor.url, conductor_key="k").launch()
    s = conductor.next_session()

    done = DBOS.start_workflow(doubling, 1)
    assert done.get_result() == 2
    forked = s.request("fork_workflow", body={"workflow_id": done.workflow_id, "start_step": 1})
    assert forked["error_message"] is None
    assert DBOS.retrieve_workflow(forked["new_workflow_id"]).get_result() == 2
    assert s.request("restart", workflow_id=done.workflow_id)["success"] is True
    unknown = s.request("fork_workflow", body={"workflow_id": "nope", "start_step": 1})
    assert unknown["new_workflow_id"] is None
    assert "nope" in unknown["error_message"]

    held = DBOS.start_workflow(blocked)
    assert entered.wait(10)
    pending = s.request("exist_pending_workflows", executor_id="local", application_version="0")
    assert pending["exist"] is True
    other = s.request("exist_pending_workflows", executor_id="other", application_version="0")
    assert other["exist"] is False
    refused = s.request("delete", workflow_id=held.workflow_id, delete_children=False)
    assert refused["success"] is False
    assert "PENDING" in refused["error_message"]
    assert s.request("cancel", workflow_id=held.workflow_id)["success"] is True
    release.set()
    assert s.request("resume", workflow_id=held.workflow_id)["success"] is True
    assert DBOS.retrieve_workflow(held.workflow_id).get_result() == "releasedreleased"

    assert s.request("delete", workflow_id=done.workflow_id, delete_children=True)["success"]
    assert s.request("get_workflow", workflow_id=done.workflow_id)["output"] is None

    retention = s.request(
        "retention",
        body={"gc_cutoff_epoch_ms": None, "gc_rows_threshold": 100, "timeout_cutoff_epoch_ms": 1},
    )
    assert retention["success"] is True

    now = datetime.now(UTC)
    start, end = (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()
    metrics = s.request(
        "get_metrics", metric_class="workflow_step_count", start_time=start, end_time=end
    )["metrics"]
    by_key = {(m["metric_type"], m["metric_name"].rsplit(".", 1)[-1]): m["value"] for m in metrics}
    assert by_key[("workflow_count", "doubling")] >= 2  # the fork and the restart
    assert by_key[("step_count", "double")] >= 2
    bad = s.request("get_metrics", metric_class="cpu", start_time=start, end_time=end)
    assert (bad["metrics"], bad["error_message"]) == ([], "Unexpected metric class: cpu")

    with_event = DBOS.start_workflow(eventful)
    assert with_event.get_result() == "set"
    DBOS.send(with_event.workflow_id, "hello", topic="greeting")
    events = s.request("get_workflow_events", workflow_id=with_event.workflow_id)
    assert events["events"] == [{"key": "color", "value": "blue"}]
    notes = s.request("get_workflow_notifications", workflow_id=with_event.workflow_id)
    [note] = notes["notifications"]
    assert (note["topic"], note["message"], note["consumed"]) == ("greeting", "hello", False)

    queues = s.request("list_queues")["output"]
    [q] = [q for q in queues if q["name"] == "conductor-q"]
    assert (q["concurrency"], q["rate_limit_max"], q["rate_limit_period_sec"]) == (3, 5, 2.0)
    assert s.request("get_queue", name="conductor-q")["output"] == q
    assert s.request("get_queue", name="missing")["output"] is None

    DBOS.create_schedule(
        schedule_name="yearly", workflow_fn=conductor_tick, schedule="0 0 1 1 *", context=7
    )
    [listed] = s.request("list_schedules", body={})["output"]
    assert (listed["schedule_name"], listed["status"], listed["context"]) == (
        "yearly",
        "ACTIVE",
        "7",
    )
    assert s.request("pause_schedule", schedule_name="yearly")["success"] is True
    got = s.request("get_schedule", schedule_name="yearly")["output"]
    assert got["status"] == "PAUSED"
    assert s.request("resume_schedule", schedule_name="yearly")["success"] is True
    triggered = s.request("trigger_schedule", schedule_name="yearly")["workflow_id"]
    assert triggered.startswith("sched-yearly-trigger-")
    none = s.request(
        "backfill_schedule",
        schedule_name="yearly",
        start=(now - timedelta(minutes=5)).isoformat(),
        end=now.isoformat(),
    )
    assert none["workflow_ids"] == []
    missing = s.request("pause_schedule", schedule_name="missing")
    assert missing["success"] is False
    assert "does not exist" in missing["error_message"]


def test_reconnects_within_10s_after_the_server_closes(
    make_dbos: MakeDBOS, conductor: LoopbackConductor
) -> None:
    """The conductor closing the socket is followed by a new connection (backoff < 10 s)."""
    make_dbos(conductor_url=conductor.url, conductor_key="k").launch()
    first = conductor.next_session()
    assert first.request("executor_info")["error_message"] is None
    closed_at = time.monotonic()
    first.close()
    second = conductor.next_session(timeout=10)
    took = time.monotonic() - closed_at
    assert took < 10
    assert second.path == first.path
    assert second.request("executor_info")["executor_id"] == "local"
    client = DBOS.runtime.conductor
    assert isinstance(client, ConductorClient)
    assert client.connections == 2


def test_destroy_with_the_connection_open_is_fast_and_reports_the_shutdown(
    make_dbos: MakeDBOS, conductor: LoopbackConductor
) -> None:
    """destroy() takes well under 5 s, leaves no conductor thread, stops the conductor in its
    phase after the drain, and sends a watching conductor the shutdown recorded so far."""
    make_dbos(conductor_url=conductor.url, conductor_key="k").launch()
    session = conductor.next_session()
    watch = session.request("shutdown_report", watch=True)
    assert watch["report"] is None  # no shutdown yet in this process
    assert _conductor_threads()

    started = time.monotonic()
    DBOS.destroy()
    took = time.monotonic() - started
    assert took < 5.0, took
    assert _conductor_threads() == []

    final = session.receive()
    assert final["type"] == "shutdown_report"
    assert final["request_id"] == watch["request_id"]
    assert final["final"] is True
    report = final["report"]
    assert report["in_progress"] is True
    names = [p["name"] for p in report["phases"]]
    assert names[-2:] == ["wait_workflows", "stop_conductor"]
    assert report["violations"] == []

    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.ok, timeline.violations
    ran = [p.name for p in timeline.phases]
    assert ran.index("stop_conductor") == ran.index("wait_workflows") + 1
    live = DBOS.thread_registry.snapshot()
    [after] = [t for t in live.threads if t.name == "dbos-conductor"]
    assert after.join_outcome is JoinOutcome.JOINED


def test_a_silent_conductor_is_dropped_by_the_keepalive_and_reconnected(
    make_dbos: MakeDBOS,
) -> None:
    """No pong within the pong timeout closes the connection and a new one is opened."""
    silent = SilentConductor()
    try:
        make_dbos().launch()
        client = ConductorClient(
            # A dead peer never answers the close handshake either: do not wait long for it.
            DBOS.runtime,
            silent.url,
            "k",
            ping_interval=0.2,
            pong_timeout=0.3,
            close_timeout=0.2,
        )
        DBOS.runtime.conductor = client
        client.start()
        assert client.wait_connected(1, 10)
        started = time.monotonic()
        assert client.wait_connected(2, 10)
        # One ping interval, the pong timeout, and the first back-off (at most 0.5 s).
        assert time.monotonic() - started < 5
    finally:
        DBOS.destroy()
        silent.stop()


def test_config_keys_arguments_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """conductor_url/conductor_key are config keys, DBOS() arguments and DBOS__ variables;
    a bad value names its key."""
    cfg = load_config({"name": "a", "conductor_url": "wss://c.example/x", "conductor_key": "k"})
    assert (cfg.conductor_url, cfg.conductor_key) == ("wss://c.example/x", "k")
    unset = load_config({"name": "a", "conductor_url": None, "conductor_key": None})
    assert unset.conductor_key is None
    with pytest.raises(DBOSConfigError, match="conductor_url"):
        load_config({"name": "a", "conductor_url": "http://c.example"})
    with pytest.raises(DBOSConfigError, match="conductor_key"):
        load_config({"name": "a", "conductor_key": "a/b"})
    monkeypatch.setenv("DBOS__CONDUCTOR_URL", "ws://env.example")
    monkeypatch.setenv("DBOS__CONDUCTOR_KEY", "envkey")
    cfg = load_config({"name": "a"})
    assert (cfg.conductor_url, cfg.conductor_key) == ("ws://env.example", "envkey")
    DBOS(config={"name": "a", "conductor_key": "cfg"}, conductor_key="arg")
    assert DBOS.runtime.config.conductor_key == "arg"
    assert DBOS.runtime.config.conductor_url == "ws://env.example"
    monkeypatch.setenv("DBOS__CONDUCTOR_URL", "not a url")
    with pytest.raises(DBOSConfigError, match="DBOS__CONDUCTOR_URL"):
        load_config({"name": "a"})


def test_websocket_url_and_backoff() -> None:
    """The path keeps a prefix and drops one trailing slash; backoff doubles, is capped, jitters."""
    assert (
        conductor_websocket_url("wss://h/conductor/v1alpha1/", "shop", "k")
        == "wss://h/conductor/v1alpha1/websocket/shop/k"
    )
    low: Any = lambda: 0.0  # noqa: E731
    high: Any = lambda: 1.0  # noqa: E731
    assert [backoff_delay(a, 0.5, 30.0, high) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff_delay(1, 0.5, 30.0, low) == 0.25
    assert backoff_delay(20, 0.5, 30.0, high) == 30.0
    assert backoff_delay(20, 0.5, 30.0, low) == 15.0
