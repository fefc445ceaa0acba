"""Crash recovery: a process killed with -9 mid-workflow loses nothing (both backends)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spindle import DBOS
from tests.conftest import MakeDBOS
from tests.runtime.recovery_app import recovery_workflow

ROOT = Path(__file__).resolve().parents[2]
COUNT = 5


def test_recovery_after_kill_9(
    make_dbos: MakeDBOS, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every workflow finishes exactly once; no completed step runs again."""
    effects = tmp_path / "effects.log"
    env = dict(os.environ, SPINDLE_EFFECTS=str(effects), SPINDLE_BLOCK="1")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.recovery_app", db_url, str(COUNT)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    monkeypatch.setenv("SPINDLE_EFFECTS", str(effects))
    monkeypatch.delenv("SPINDLE_BLOCK", raising=False)
    assert callable(recovery_workflow)  # imported, so registered here under the same name
    make_dbos().launch()  # recovers the child's PENDING workflows (same executor id)
    ids = [f"rec-{i}" for i in range(COUNT)]
    assert [DBOS.retrieve_workflow(i).get_result() for i in ids] == [6] * COUNT
    statuses = {w.workflow_id: w for w in DBOS.list_workflows(workflow_ids=ids)}
    assert {s.status for s in statuses.values()} == {"SUCCESS"}
    assert all(s.recovery_attempts == 1 for s in statuses.values())

    counts = collections.Counter(effects.read_text().split())
    for wf in ids:
        assert counts[f"{wf}:1"] == 1, "a step that completed before the crash ran again"
        assert counts[f"{wf}:2"] == 2, "the in-flight step runs again after recovery"
        assert counts[f"{wf}:3"] == 1
        assert counts[f"{wf}:done"] == 1
