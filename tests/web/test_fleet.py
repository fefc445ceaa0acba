"""Spindle as the conductor: the fleet page, its actions and auth, and ``spindle conductor``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from spindle.web import Fleet, create_conductor_app
from spindle.web._views import htmx_available
from tests.conftest import _pg_admin

from .conftest import Served, serve

ROOT = Path(__file__).resolve().parents[2]
RED = "rgb(198, 40, 40)"  # --red in dashboard.css
TOKEN = "fleet-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def poll_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Another process's state, read until ``predicate`` returns something truthy.

    The apps are separate processes: there is no event to wait on, only their answers.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {predicate}")
        pause.wait(0.1)


class App:
    """One app process connected to the conductor (``tests/web/fleet_app.py``)."""

    def __init__(self, name: str, db_url: str, conductor_url: str, *extra: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.web.fleet_app",
                name,
                db_url,
                conductor_url,
                TOKEN,
                *extra,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["ready"], f"{name} did not start: {line}"
        self.waiting_id = line[1]

    def stop(self) -> int:
        """Tell it to destroy() and exit; its exit code (its pipes are closed)."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if self.proc.poll() is None and not self.proc.stdin.closed:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        code = self.proc.wait(30)
        self.proc.stdin.close()
        self.proc.stdout.close()
        return code


def _fleet(url: str) -> dict[str, dict[str, Any]]:
    data = httpx.get(f"{url}/dbos/fleet.json", headers=AUTH, timeout=10).json()
    return {e["app"]: e for e in data["executors"]}


@pytest.fixture
def second_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second system database on the same backend (each app has its own)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'billing.sqlite'}"
        return
    name = f"spindle_test_{uuid.uuid4().hex[:12]}"
    yield db_url.rsplit("/", 1)[0] + f"/{name}"
    engine = _pg_admin()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture
def conductor_served() -> Iterator[Served]:
    """The conductor app served by uvicorn on a free loopback port (polls every 0.3 s)."""
    yield from serve(create_conductor_app(token=TOKEN, poll_interval=0.3))


@pytest.mark.browser
@pytest.mark.slow
def test_fleet_page_shows_two_apps_their_threads_actions_and_a_shutdown(
    browser: Any, artifacts: Path, db_url: str, second_db_url: str, conductor_served: Served
) -> None:
    """Two app processes on the page with identity and threads by kind; cancel from the page
    cancels the workflow; one app's shutdown (with a violation) appears as it leaves; the
    other, killed -9, shows as disconnected, not shut down."""
    served = conductor_served
    ws_url = served.url.replace("http://", "ws://")
    apps: list[App] = []
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, extra_http_headers=AUTH)
    context.set_default_timeout(15_000)
    try:
        apps.append(App("shop", db_url, ws_url))
        apps.append(App("billing", second_db_url, ws_url, "spawn_after_shutdown"))
        shop, billing = apps

        def both_reported() -> bool:
            # Every kind the page is checked for below: the queue manager starts last in
            # launch(), after the conductor may already have sent its first thread dump.
            fleet = _fleet(served.url)
            return all(
                {"conductor", "queue", "notification_listener"}
                <= set(fleet.get(a.name, {}).get("thread_counts", {}))
                and fleet[a.name]["workflows"]
                for a in apps
            )

        poll_until(both_reported)
        page = context.new_page()
        page.goto(f"{served.url}/dbos/fleet")
        assert page.inner_text("#summary").startswith("2 executors connected")
        for app in apps:
            section = page.locator(f"section.executor[data-app={app.name}]")
            assert section.get_attribute("data-state") == "connected"
            text = section.inner_text()
            assert f"{app.name}-1" in text  # executor id
            assert "1.0" in text  # application version
            assert "spindle-" in text
            kinds = section.locator("tr.kind").evaluate_all("els => els.map(e => e.dataset.kind)")
            assert {"conductor", "queue", "notification_listener"} <= set(kinds)
        page.screenshot(path=str(artifacts / "fleet.png"), full_page=True)

        # Cancel shop's waiting workflow from the page: sent over the protocol.
        row = page.locator(f"section[data-app=shop] tr.workflow[data-id='{shop.waiting_id}']")
        assert row.get_attribute("data-status") == "PENDING"
        row.locator("button[value=cancel]").click()
        page.wait_for_selector("#flash.ok")
        assert f"cancel {shop.waiting_id}: done" in page.inner_text("#flash")
        row = page.locator(f"section[data-app=shop] tr.workflow[data-id='{shop.waiting_id}']")
        assert row.get_attribute("data-status") == "CANCELLED"

        # billing shuts down: its report arrives as it leaves, its violation in red.
        assert billing.stop() == 0
        gone = poll_until(lambda: _fleet(served.url)["billing"]["state"] == "shut down")
        assert gone
        if htmx_available():
            # htmx swaps the new state in without a reload (every 2 s).
            page.wait_for_selector("section[data-app=billing][data-state='shut down']")
        page.goto(f"{served.url}/dbos/fleet")
        section = page.locator("section.executor[data-app=billing]")
        assert section.get_attribute("data-state") == "shut down"
        phases = section.locator("li.phase").evaluate_all("els => els.map(e => e.dataset.phase)")
        assert phases[-2:] == ["wait_workflows", "stop_conductor"]
        violation = section.locator("article.violation").first
        assert "spawn-after-shutdown-began" in violation.inner_text()
        assert "dbos-late-spawn" in violation.inner_text()
        assert violation.evaluate("e => getComputedStyle(e).color") == RED
        shop_section = page.locator("section.executor[data-app=shop]")
        assert shop_section.get_attribute("data-state") == "connected"
        page.screenshot(path=str(artifacts / "fleet-shutdown.png"), full_page=True)

        # shop is killed -9: it just disappears, without a report. Not "shut down".
        shop.proc.kill()
        poll_until(lambda: _fleet(served.url)["shop"]["state"] == "disconnected")
        page.goto(f"{served.url}/dbos/fleet")
        assert page.inner_text("#summary").startswith("0 executors connected, 2 gone")
        shop_section = page.locator("section.executor[data-app=shop]")
        assert shop_section.get_attribute("data-state") == "disconnected"
        assert "none reported yet" in shop_section.inner_text()
    finally:
        context.close()
        for app in apps:
            app.stop()


# -- the server, without a browser: an app played by the test over a TestClient websocket --


def _answer_requests(ws: Any, replies: dict[str, dict[str, Any]], count: int) -> list[str]:
    """Answer ``count`` requests from the conductor with ``replies[type]``; their types."""
    seen = []
    for _ in range(count):
        msg = json.loads(ws.receive_text())
        seen.append(msg["type"])
        body = replies.get(msg["type"], {"error_message": "Unknown message type"})
        ws.send_text(json.dumps({"type": msg["type"], "request_id": msg["request_id"], **body}))
    return seen


def test_conductor_server_speaks_the_protocol_and_guards_every_route() -> None:
    """executor_info first; a DBOS app (not Spindle) is asked no Spindle-only type; actions
    validate input (4xx, never 5xx) and refuse cross-origin posts; the token guards all."""
    fleet = Fleet(poll_interval=30.0, request_timeout=5.0)
    app = create_conductor_app(token=TOKEN, fleet=fleet)
    with TestClient(app) as client:
        assert client.get("/dbos/fleet").status_code == 401
        assert client.get("/dbos/fleet.json").json()["status"] == 401
        assert client.get("/dbos/fleet/login").status_code == 200
        bad = client.post("/dbos/fleet/login", data={"token": "nope"})
        assert bad.status_code == 401
        ok = client.post("/dbos/fleet/login", data={"token": TOKEN}, follow_redirects=False)
        assert ok.status_code == 303
        assert "samesite=strict" in ok.headers["set-cookie"].lower()
        # The admin server's one auth layer: the cookie holds a keyed hash, never the token.
        assert ok.headers["set-cookie"].startswith("spindle_conductor_token=")
        assert TOKEN not in ok.headers["set-cookie"]
        assert client.get("/dbos/fleet").status_code == 200  # the cookie now

        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/websocket/shop/wrong-key"),
        ):
            pass
        assert refused.value.code == 1008

        info = {
            "executor_id": "dbos-1",
            "application_version": "v2",
            "hostname": "h",
            "language": "python",
            "dbos_version": "2.30.0",
        }
        listed = {"output": [{"WorkflowUUID": "wf-1", "Status": "PENDING", "WorkflowName": "w"}]}
        with client.websocket_connect(f"/websocket/shop/{TOKEN}") as ws:
            seen = _answer_requests(ws, {"executor_info": info, "list_workflows": listed}, 2)
            # Frames that are no reply (binary, not JSON) are logged, never fatal.
            ws.send_bytes(b"\xff not json")
            ws.send_text("[]")
            # A DBOS app gets DBOS's types only: no thread_dump, no shutdown_report watch.
            assert seen == ["executor_info", "list_workflows"]
            [ex] = fleet.executors()
            assert (ex.executor_id, ex.application_version, ex.runtime) == ("dbos-1", "v2", None)
            url = f"/dbos/fleet/executors/{ex.session_id}/actions"
            json_accept = {"Accept": "application/json"}
            for form, status in (
                ({"action": "delete", "workflow_id": "wf-1"}, 400),
                ({"action": "cancel", "workflow_id": ""}, 400),
                ({"action": "fork", "workflow_id": "wf-1", "start_step": "0"}, 400),
                ({"action": "cancel", "workflow_id": "x" * 300}, 400),
            ):
                r = client.post(url, data=form, headers=json_accept)
                assert r.status_code == status, (form, r.text)
                assert r.json()["error"]
            missing = client.post(
                "/dbos/fleet/executors/nope/actions", data={}, headers=json_accept
            )
            assert missing.status_code == 404
            cross = client.post(
                url,
                data={"action": "cancel", "workflow_id": "wf-1"},
                headers={"Origin": "http://evil.example", **json_accept},
            )
            assert cross.status_code == 403

            # A cancel from the page is a request the app answers; the page shows the outcome.
            result: dict[str, Any] = {}

            def post_cancel() -> None:
                result["r"] = client.post(
                    url, data={"action": "cancel", "workflow_id": "wf-1"}, headers=json_accept
                )

            poster = threading.Thread(target=post_cancel)
            poster.start()
            cancel = json.loads(ws.receive_text())
            assert (cancel["type"], cancel["workflow_id"]) == ("cancel", "wf-1")
            ws.send_text(
                json.dumps({"type": "cancel", "request_id": cancel["request_id"], "success": True})
            )
            refreshed = {"output": [{"WorkflowUUID": "wf-1", "Status": "CANCELLED"}]}
            _answer_requests(ws, {"list_workflows": refreshed}, 1)
            poster.join(10)
            assert result["r"].status_code == 200
            assert result["r"].json()["result"] == "cancel wf-1: done"
            assert fleet.executors()[0].workflows[0]["Status"] == "CANCELLED"
        after = client.get("/dbos/fleet.json").json()["executors"]
        assert [e["state"] for e in after] == ["disconnected"]
        gone = client.post(
            url, data={"action": "cancel", "workflow_id": "wf-1"}, headers=json_accept
        )
        assert gone.status_code == 409


def test_spindle_conductor_command_serves_and_stops_on_sigterm() -> None:
    """``python -m spindle conductor --port 0`` prints its URLs, guards the page with the
    token and stops on SIGTERM; beyond loopback without a token it refuses to start."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    refused = subprocess.run(
        [sys.executable, "-m", "spindle", "conductor", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        env={k: v for k, v in env.items() if k != "SPINDLE_CONDUCTOR_TOKEN"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "--token" in refused.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "spindle", "conductor", "--port", "0", "--token", TOKEN],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert "fleet page at http://127.0.0.1:" in line
        page_url = line.split("fleet page at ")[1].split()[0]
        assert httpx.get(page_url, timeout=10).status_code == 401
        page = httpx.get(page_url, headers=AUTH, timeout=10)
        assert page.status_code == 200
        assert "No app has connected yet." in page.text
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: the conventional status
        # of a process that ended on SIGTERM, which is what a supervisor expects.
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
