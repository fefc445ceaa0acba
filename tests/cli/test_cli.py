"""The ``spindle`` command against a real app running in a child process, on both backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from spindle.cli import main
from spindle.diagnostics._phases import SHUTDOWN_PHASES
from tests.cli.conftest import ROOT, TOKEN, RunningApp, closed_port, read_line_with


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPINDLE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("DBOS_SYSTEM_DATABASE_URL", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``spindle argv`` in this process: (status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def one_line(err: str) -> str:
    """The error output, checked to be one line and no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_threads_dumps_every_thread_innermost_frame_first(
    running_app: RunningApp, capsys: pytest.CaptureFixture[str]
) -> None:
    """Names, kinds, states, waits and stacks, as /dbos/threads.json has them."""
    table = httpx.get(
        f"{running_app.url}/dbos/threads.json",
        params={"limit": 10000},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    status, out, _ = run(capsys, "threads", "--url", running_app.url, "--token", TOKEN)
    assert status == 0
    assert out.startswith("Thread dump of cli-app at ")
    for row in table["threads"]:
        assert f'"{row["name"]}" #{row["id"]} kind={row["kind"]}' in out
    assert "kind=notification_listener" in out
    # The blocked workflow's executor: its wait is the innermost frame, its workflow below.
    blocked = out[out.index("at wait_for_release (") :]
    assert "at cli_blocked (" in blocked
    assert blocked.index("at cli_blocked (") < blocked.index("at _worker (")
    assert "waits on: event" in out

    status, out, _ = run(
        capsys,
        "threads",
        "--url",
        running_app.url,
        "--token",
        TOKEN,
        "--kind",
        "executor",
        "--json",
    )
    assert status == 0
    dumped = json.loads(out)
    assert dumped["service"] == "cli-app"
    assert dumped["threads"]
    assert {t["kind"] for t in dumped["threads"]} == {"executor"}
    assert all(isinstance(t["stack"], list) for t in dumped["threads"])
    assert any(f["function"] == "wait_for_release" for t in dumped["threads"] for f in t["stack"])


def test_threads_and_shutdown_refuse_without_the_token(
    running_app: RunningApp, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 is one line that says what to pass; the token also comes from the environment."""
    status, _, err = run(capsys, "threads", "--url", running_app.url)
    assert status == 1
    assert "401 Unauthorized: pass --token or set SPINDLE_ADMIN_TOKEN" in one_line(err)
    status, _, err = run(capsys, "threads", "--url", running_app.url, "--token", "wrong")
    assert status == 1
    assert "the token was refused" in one_line(err)
    status, _, err = run(capsys, "shutdown", "--url", running_app.url)
    assert status == 1
    assert "401" in one_line(err)
    monkeypatch.setenv("SPINDLE_ADMIN_TOKEN", TOKEN)
    status, _, err = run(capsys, "shutdown", "--url", running_app.url)
    # Reached and authorised: this app has not shut down yet.
    assert status == 1
    assert "has recorded no shutdown yet" in one_line(err)


def test_unreachable_url_and_bad_arguments_are_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No server, a bad URL, a bad kind, a missing database: one line, non-zero, no traceback."""
    url = f"http://127.0.0.1:{closed_port()}"
    status, _, err = run(capsys, "threads", "--url", url)
    assert status == 1
    assert one_line(err).startswith(f"spindle: cannot reach {url}")
    status, _, err = run(capsys, "threads", "--url", "ftp://x")
    assert status == 2
    assert "--url must be an http:// or https:// URL" in one_line(err)
    status, _, err = run(capsys, "threads", "--kind", "bogus")
    assert status == 2
    assert "invalid choice: 'bogus'" in one_line(err)
    status, _, err = run(capsys, "workflow", "list")
    assert status == 2
    assert "pass -s/--sys-db-url" in one_line(err)
    status, _, err = run(capsys, "workflow", "list", "-s", "mysql://x", "-l", "3")
    assert status == 2
    status, _, err = run(capsys, "workflow", "list", "-s", "sqlite:///x.sqlite", "-l", "-3")
    assert status == 2
    assert "must be >= 0" in one_line(err)
    status, _, err = run(capsys, "shutdown", "no-such-report.json")
    assert status == 2
    assert "no such report" in one_line(err)


def test_workflow_commands_on_the_system_database(
    running_app: RunningApp, capsys: pytest.CaptureFixture[str]
) -> None:
    """list, get, steps, fork, cancel, resume and queue list, with the app running."""
    db = ("-s", running_app.db_url)
    status, out, _ = run(capsys, "workflow", "list", *db, "-l", "50")
    assert status == 0
    ids = [w["workflow_id"] for w in json.loads(out)]
    assert {"cli-done", "cli-blocked", "cli-queued-1", "cli-queued-2"} <= set(ids)
    status, out, _ = run(capsys, "workflow", "list", *db, "-S", "SUCCESS", "-n", "cli_done")
    assert [w["workflow_id"] for w in json.loads(out)] == ["cli-done"]

    status, out, _ = run(capsys, "workflow", "get", "cli-done", *db)
    done = json.loads(out)
    assert (status, done["status"], done["output"], done["name"]) == (0, "SUCCESS", 14, "cli_done")
    status, out, _ = run(capsys, "workflow", "steps", "cli-done", *db)
    steps = json.loads(out)
    assert [(s["function_id"], s["function_name"], s["output"]) for s in steps] == [
        (1, "add_one", "2"),
        (2, "add_one", "12"),
    ]

    status, out, _ = run(capsys, "queue", "list", *db, "-q", "cli-slow")
    queued = {w["workflow_id"]: w["status"] for w in json.loads(out)}
    assert queued.get("cli-queued-2") == "ENQUEUED"

    status, out, _ = run(
        capsys, "workflow", "fork", "cli-done", "--step", "2", "--forked-workflow-id", "fk", *db
    )
    forked = json.loads(out)
    assert (status, forked["workflow_id"], forked["status"]) == (0, "fk", "PENDING")
    status, out, _ = run(capsys, "workflow", "steps", "fk", *db)
    assert [s["function_id"] for s in json.loads(out)] == [1]  # steps before --step are kept

    status, out, _ = run(capsys, "workflow", "cancel", "cli-blocked", *db)
    assert (status, out.strip()) == (0, "cancelled cli-blocked")
    status, out, _ = run(capsys, "workflow", "get", "cli-blocked", *db)
    assert json.loads(out)["status"] == "CANCELLED"
    status, _, err = run(capsys, "workflow", "cancel", "cli-done", *db)
    assert status == 1
    assert "is SUCCESS" in one_line(err)
    status, out, _ = run(capsys, "workflow", "resume", "cli-blocked", *db)
    assert status == 0
    assert "PENDING on executor 'local'" in out
    status, out, _ = run(capsys, "workflow", "get", "cli-blocked", *db)
    assert json.loads(out)["status"] == "PENDING"
    status, _, err = run(capsys, "workflow", "get", "nope", *db)
    assert status == 1
    assert one_line(err) == "spindle: no workflow with ID 'nope'"


def test_shutdown_table_from_a_report_and_from_serve(
    running_app: RunningApp, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app's shutdown report as a table; `spindle serve` serves it to `shutdown --url`."""
    running_app.stop()
    assert running_app.process.returncode == 0
    status, out, _ = run(capsys, "shutdown", str(running_app.report))
    assert status == 0
    assert "of cli-app" in out.splitlines()[0]
    # Every phase, numbered as the phase specs order them (the one list the runner reads).
    for index, name in enumerate(SHUTDOWN_PHASES, 1):
        assert f"  {index:>2}  {name:<28} ok" in out
    assert "Violations: none" in out

    server = subprocess.Popen(
        [sys.executable, "-m", "spindle", "serve", str(running_app.report), "--port", "0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line_with(server.stderr, "serving", 60)
        url = line.split("serving ")[1].strip().removesuffix("/shutdown")
        status, served, _ = run(capsys, "shutdown", "--url", url)
        assert status == 0
        # Same table but for the source named in the first line.
        assert served.splitlines()[1:] == out.splitlines()[1:]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
        assert server.stderr is not None
        server.stderr.close()


def test_migrate_and_reset(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """migrate creates the tables; reset asks (refuses without a terminal) and drops them."""
    status, out, _ = run(capsys, "migrate", "-s", db_url)
    assert status == 0
    assert "schema at version" in out
    status, out, _ = run(capsys, "workflow", "list", "-s", db_url)
    assert (status, json.loads(out)) == (0, [])
    status, _, err = run(capsys, "reset", "-s", db_url)  # stdin is not a terminal here
    assert status == 2
    assert "pass --yes" in one_line(err)
    status, out, _ = run(capsys, "reset", "-s", db_url, "--yes")
    assert status == 0
    status, _, err = run(capsys, "workflow", "list", "-s", db_url)
    assert status == 1
    assert "run `spindle migrate" in one_line(err)
    assert run(capsys, "migrate", "-s", db_url)[0] == 0
    assert run(capsys, "workflow", "list", "-s", db_url)[1].strip() == "[]"


def test_console_entry_point_help_and_errors() -> None:
    """`python -m spindle` runs the CLI: --help lists every command; errors have no traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("SPINDLE_ADMIN_TOKEN", None)
    shown = subprocess.run(
        [sys.executable, "-m", "spindle", "--help"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0
    for command in ("threads", "shutdown", "serve", "demo", "workflow", "queue", "migrate"):
        assert command in shown.stdout
    url = f"http://127.0.0.1:{closed_port()}"
    failed = subprocess.run(
        [sys.executable, "-m", "spindle", "threads", "--url", url],
        capture_output=True,
        text=True,
        env=env,
    )
    assert failed.returncode == 1
    assert one_line(failed.stderr).startswith("spindle: cannot reach")


@pytest.mark.slow
def test_demo_runs_until_interrupted(tmp_path: Path) -> None:
    """`spindle demo` serves the dashboard, and Ctrl-C runs the ordered shutdown."""
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spindle",
            "demo",
            "--port",
            "0",
            "--database",
            f"sqlite:///{tmp_path / 'demo.sqlite'}",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = read_line_with(demo.stdout, "dashboard:", 60)
        url = line.split()[1].removesuffix("/dbos/threads")
        assert httpx.get(f"{url}/dbos/threads.json").status_code == 200
        demo.send_signal(signal.SIGINT)
        assert demo.stdout is not None
        rest = demo.stdout.read()
        assert demo.wait(60) == 0
        assert "violations: 0" in rest
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        if demo.stdout is not None:
            demo.stdout.close()


def test_a_thread_shows_the_workflow_the_server_reports() -> None:
    """When the server names a thread's workflow (and step), the dump shows it."""
    from spindle.cli._threads import format_thread

    row = {
        "id": 7,
        "name": "dbos-executor-1",
        "kind": "executor",
        "state": "waiting",
        "workflow_id": "order-42",
        "step": "charge_card",
        "stack": [
            {"function": "outer", "filename": "a.py", "lineno": 1},
            {"function": "inner", "filename": "a.py", "lineno": 9, "line": "lock.acquire()"},
        ],
    }
    text = format_thread(row)
    assert "    workflow: order-42 (step charge_card)" in text
    assert text.index("at inner (a.py:9)") < text.index("at outer (a.py:1)")
    assert "lock.acquire()" in text
    assert "workflow: -" in format_thread({**row, "workflow_id": None, "step": None})


@pytest.mark.slow
def test_threads_pyspy_asks_the_server_for_one_dump(
    running_app: RunningApp, capsys: pytest.CaptureFixture[str]
) -> None:
    """--pyspy: native frames from one py-spy dump of the app, innermost first."""
    status, out, err = run(capsys, "threads", "--url", running_app.url, "--token", TOKEN, "--pyspy")
    if status != 0 and "py-spy" in err:
        pytest.skip(f"py-spy cannot attach here: {err.strip()}")
    assert status == 0, err
    assert out.startswith(f"py-spy dump of {running_app.url}: ")
    assert "GIL held by: " in out
    blocked = out[out.index('"dbos-executor-') :]
    assert "at wait_for_release (" in blocked
    assert "[native]" in out
