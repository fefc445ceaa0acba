"""Crash recovery: a process killed with -9 mid-workflow loses nothing (both backends)."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from spindle import DBOS, SetWorkflowID
from spindle.runtime._schema import workflow_status as ws
from spindle.runtime._serialization import serialize
from spindle.runtime._sysdb import SystemDatabase
from tests.conftest import MakeDBOS
from tests.runtime import messaging_app
from tests.runtime.queue_app import enqueue_row
from tests.runtime.recovery_app import recovery_workflow

ROOT = Path(__file__).resolve().parents[2]
COUNT = 5


def _run_child_until_ready(module: str, args: list[str], env: dict[str, str]) -> None:
    """Run ``python -m module args``, wait for its READY line, then kill it with -9."""
    child = subprocess.Popen(
        [sys.executable, "-m", module, *args],
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


def test_recovery_after_kill_9(
    make_dbos: MakeDBOS, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every workflow finishes exactly once; no completed step runs again."""
    effects = tmp_path / "effects.log"
    env = dict(os.environ, SPINDLE_EFFECTS=str(effects), SPINDLE_BLOCK="1")
    _run_child_until_ready("tests.runtime.recovery_app", [db_url, str(COUNT)], env)

    monkeypatch.setenv("SPINDLE_EFFECTS", str(effects))
    monkeypatch.delenv("SPINDLE_BLOCK", raising=False)
    assert callable(recovery_workflow)  # imported, so registered here under the same name
    make_dbos().launch()  # recovers the child's PENDING workflows (same executor id)
    ids = [f"rec-{i}" for i in range(COUNT)]
    assert [DBOS.retrieve_workflow(i).get_result() for i in ids] == [6] * COUNT
    statuses = {w.workflow_id: w for w in DBOS.list_workflows(workflow_ids=ids)}
    assert {s.status for s in statuses.values()} == {"SUCCESS"}
    assert all(s.recovery_attempts == 2 for s in statuses.values())  # first run + recovery

    counts = collections.Counter(effects.read_text().split())
    for wf in ids:
        assert counts[f"{wf}:1"] == 1, "a step that completed before the crash ran again"
        assert counts[f"{wf}:2"] == 2, "the in-flight step runs again after recovery"
        assert counts[f"{wf}:3"] == 1
        assert counts[f"{wf}:done"] == 1


def test_messages_survive_kill_9_of_receiver_and_sender(
    make_dbos: MakeDBOS, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed mid-conversation, both sides recover: the message taken before the crash is
    not delivered again, the one sent but not taken is delivered once, the sender's replay
    does not send it twice, and a message sent after recovery wakes the receiver."""
    from spindle.runtime._schema import notifications

    effects = tmp_path / "effects.log"
    env = dict(os.environ, SPINDLE_EFFECTS=str(effects), SPINDLE_BLOCK="1")
    _run_child_until_ready("tests.runtime.messaging_app", [db_url], env)

    monkeypatch.setenv("SPINDLE_EFFECTS", str(effects))
    monkeypatch.delenv("SPINDLE_BLOCK", raising=False)
    assert callable(messaging_app.msg_receiver)  # registered here under the same names
    make_dbos().launch()  # recovers both workflows
    assert DBOS.retrieve_workflow(messaging_app.SENDER_ID).get_result() == "sent"
    assert DBOS.get_event(messaging_app.SENDER_ID, "sent", timeout_seconds=0) == "m2"
    DBOS.send(messaging_app.RECEIVER_ID, "m3", messaging_app.TOPIC)
    received = DBOS.retrieve_workflow(messaging_app.RECEIVER_ID).get_result()
    assert received == ["m1", "m2", "m3"]

    with DBOS.runtime.sysdb.engine.connect() as conn:
        left = conn.execute(sa.select(notifications.c.message)).all()
    assert left == [], "a message was sent twice (or never taken)"
    counts = collections.Counter(effects.read_text().split())
    assert counts["recv:m1"] == 2, "the in-flight step after recv runs again after recovery"
    assert counts["recv:m2"] == 1
    assert counts["recv:m3"] == 1
    assert counts["sent:m2"] == 2


@DBOS.workflow(max_recovery_attempts=2)
def limited_workflow() -> str:
    return "ran"


def test_max_recovery_attempts_makes_a_dead_letter(
    make_dbos: MakeDBOS, caplog: pytest.LogCaptureFixture
) -> None:
    """A PENDING workflow that used up its recovery attempts is not run again on launch;
    it becomes MAX_RECOVERY_ATTEMPTS_EXCEEDED and its handle says so; resume runs it."""
    from spindle import DBOSMaxRecoveryAttemptsExceededError
    from spindle.runtime._schema import workflow_status

    dbos = make_dbos()
    dbos.launch()
    with SetWorkflowID("crashy"):
        assert limited_workflow() == "ran"
    sysdb = DBOS.runtime.sysdb
    with sysdb.engine.begin() as conn:
        # As if it had crashed its process twice while running.
        conn.execute(
            workflow_status.update()
            .where(workflow_status.c.workflow_uuid == "crashy")
            .values(status="PENDING", output=None, recovery_attempts=2)
        )
    DBOS.destroy()
    caplog.set_level(logging.WARNING)
    DBOS.launch()
    # Recovery runs in the background (as in DBOS): wait for its last batch.
    done = DBOS.runtime.recovery_done
    assert done is not None
    assert done.wait(30)
    status = DBOS.retrieve_workflow("crashy").get_status()
    assert status.status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    assert any("exceeded its maximum of 2" in r.getMessage() for r in caplog.records)
    with pytest.raises(DBOSMaxRecoveryAttemptsExceededError):
        DBOS.retrieve_workflow("crashy").get_result()
    assert DBOS.resume_workflow("crashy").get_result() == "ran"


@DBOS.workflow()
def versioned(x: int) -> int:
    return x * 2


def test_launch_recovers_only_its_own_application_version(make_dbos: MakeDBOS, db_url: str) -> None:
    """As DBOS: launch recovers (and puts back in their queue) the PENDING workflows of its
    own application version and version-less ones; another version's wait for its own."""
    name = versioned.__spindle_workflow__.name  # type: ignore[attr-defined]
    db = SystemDatabase(db_url, pool_size=1)
    try:
        db.migrate()
        for wf_id, version in (("mine", "0"), ("none", "0"), ("theirs", "v2")):
            db.insert_workflow(
                workflow_id=wf_id,
                name=name,
                inputs=serialize(((3,), {}), "inputs"),
                executor_id="local",
                application_version=version,
            )
        for wf_id, version in (("queued-mine", "0"), ("queued-theirs", "v2")):
            enqueue_row(db, "elsewhere", wf_id, application_version=version)
        with db.engine.begin() as conn:
            conn.execute(
                ws.update().where(ws.c.workflow_uuid == "none").values(application_version=None)
            )
            conn.execute(  # both were running here when the process died
                ws.update()
                .where(ws.c.queue_name == "elsewhere")
                .values(status="PENDING", executor_id="local")
            )
    finally:
        db.close()

    make_dbos().launch()  # executor "local", application version "0"
    assert DBOS.retrieve_workflow("mine").get_result() == 6
    assert DBOS.retrieve_workflow("none").get_result() == 6
    rows = {w.workflow_id: w for w in DBOS.list_workflows()}
    assert (rows["theirs"].status, rows["theirs"].recovery_attempts) == ("PENDING", 1)
    assert rows["queued-mine"].status == "ENQUEUED"  # back in its queue
    assert rows["queued-theirs"].status == "PENDING"
