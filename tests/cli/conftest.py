"""A running app in a child process, for the CLI tests (and the dashboards' metric check)."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cli-test-token"


@dataclass
class RunningApp:
    """The child: its admin URL, its database and where it writes its shutdown report."""

    url: str
    db_url: str
    report: Path
    process: subprocess.Popen[str]

    def stop(self, timeout: float = 30.0) -> None:
        """Close its stdin (it shuts down) and wait for it to exit."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            if self.process.stdout is not None:
                self.process.stdout.close()


def read_line_with(stream: object, marker: str, timeout: float) -> str:
    """The first line of ``stream`` (a pipe) containing ``marker``, waiting at most ``timeout``."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise AssertionError(f"no line with {marker!r} within {timeout}s")
            line: str = stream.readline()  # type: ignore[attr-defined]
            if not line:
                raise AssertionError(f"the child ended before printing {marker!r}")
            if marker in line:
                return line
    finally:
        selector.close()


def start_app(db_url: str, report: Path, token: str = TOKEN) -> RunningApp:
    """Start ``tests.cli.cli_app`` and wait for its READY line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.cli.cli_app", db_url, token, str(report)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line_with(process.stdout, "READY", 60)
    except BaseException:
        process.kill()
        process.wait(10)
        raise
    return RunningApp(line.split()[1], db_url, report, process)


@pytest.fixture
def running_app(db_url: str, tmp_path: Path) -> Iterator[RunningApp]:
    """The CLI test app, running on the test's database; stopped afterwards."""
    app = start_app(db_url, tmp_path / "report.json")
    try:
        yield app
    finally:
        app.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
