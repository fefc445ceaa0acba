"""DBOS 2.30's DBOSClient members beyond enqueue/send/get (bulk management, delays,
attributes, versions, bulk and in-transaction writes, schedule backfill/trigger), from a
separate OS process against a running app, on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from spindle import DBOS, Queue
from spindle.runtime._debouncer import _internal_queue
from tests.conftest import MakeDBOS

ROOT = Path(__file__).resolve().parents[2]
clientm_queue = Queue("clientm-queue", polling_interval_sec=0.1)


@DBOS.workflow()
def clientm_add(a: int, b: int) -> int:
    return a + b


@DBOS.workflow()
def clientm_inbox(n: int) -> list[Any]:
    return [DBOS.recv("t", timeout_seconds=30) for _ in range(n)]


@DBOS.workflow()
def clientm_tick(scheduled_time: datetime, context: Any) -> str:
    return scheduled_time.isoformat()


@pytest.mark.slow
def test_client_members_from_another_process(make_dbos: MakeDBOS, db_url: str) -> None:
    make_dbos(application_version="v-clientm").launch()
    # The app drains DBOS's internal queue, where the client enqueues a schedule's ticks.
    _internal_queue()
    done = subprocess.run(
        [sys.executable, "-m", "tests.runtime.client_members_script", db_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["cancelled"] == ["CANCELLED", "CANCELLED"]
    assert seen["resumed"] == [2, 4]
    assert seen["delayed"] == "DELAYED"
    assert seen["undelayed"] == 10
    assert seen["attributes"] == {"team": "ops"}
    assert seen["attributes_missing"] == "DBOSNonExistentWorkflowError"
    assert seen["deleted"] == "DBOSNonExistentWorkflowError"
    assert seen["deleted_bulk"] == []
    assert seen["versions"] == ["v-clientm"]
    assert seen["latest"] == seen["latest_async"] == "v-promoted"
    assert seen["inbox"] == ["a", "b", "c", "d"]  # the rolled-back message never arrived
    assert seen["send_missing"] == "DBOSNonExistentWorkflowError"
    assert seen["send_keyed"] == "DBOSException"
    assert seen["txn_rolled_back"] == []
    assert seen["txn"] == 14
    assert seen["txn_dedup"] == "DBOSQueueDeduplicatedError"
    assert seen["backfill"] == ["2021-01-01T00:00:00+00:00", "2022-01-01T00:00:00+00:00"]
    assert seen["backfill_again"] is True
    assert seen["trigger"] is True
    assert seen["backfill_missing"] == "DBOSException"
    assert seen["refused"] == ["DBOSException"] * 5
    # The client runs no thread of its own.
    assert seen["threads_before"] == seen["threads_during"] == 1
    # The app ran the client's ticks under the live scheduler's IDs.
    assert DBOS.retrieve_workflow("sched-m-yearly-2021-01-01T00:00:00+00:00").get_result()
