"""The durable-operation protocol on its own: one operation, driven sync and async alike."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from spindle import DBOSWorkflowCancelledError
from spindle.diagnostics import RealClock
from spindle.runtime import _durable
from spindle.runtime._active import ActiveWorkflow
from spindle.runtime._context import WorkflowContext, current_workflow
from spindle.runtime._errors import WorkflowInterrupted
from spindle.runtime._rows import StepRow
from spindle.runtime._serialization import Codecs, deserialize, serialize
from spindle.runtime._sysdb_gate import SystemDatabaseClosed


@dataclass
class FakeSysdb:
    """Records steps in memory; ``outcome`` is what the next write answers."""

    rows: dict[int, StepRow] = field(default_factory=dict)
    outcome: str = "recorded"
    closed: bool = False
    codecs: Codecs = field(default_factory=Codecs)

    def record_step(
        self,
        workflow_id: str,
        fid: int,
        name: str,
        *,
        output: bytes | None,
        error: bytes | None,
        child_workflow_id: str | None = None,
        started_at: int | None = None,
        serialization: str | None = None,
    ) -> str:
        if self.closed:
            raise SystemDatabaseClosed("closed")
        if self.outcome == "recorded":
            self.rows[fid] = StepRow(
                fid, name, output, error, child_workflow_id, 0, serialization, started_at
            )
        return self.outcome

    def step_outputs(self, workflow_id: str) -> dict[int, StepRow]:
        return self.rows


@dataclass
class FakeHost:
    """The three things the protocol reads of the runtime."""

    sysdb: Any = field(default_factory=FakeSysdb)
    interrupting: bool = False
    clock: Any = field(default_factory=RealClock)


@pytest.fixture(autouse=True)
def _no_workflow_left() -> Any:
    token = current_workflow.set(None)
    yield
    current_workflow.reset(token)  # the contexts these tests set never leak into others


def _in_workflow(recorded: dict[int, StepRow] | None = None) -> WorkflowContext:
    ctx = WorkflowContext("wf", "wf", ActiveWorkflow("wf"), None, recorded)
    current_workflow.set(ctx)
    return ctx


def _row(fid: int, value: Any) -> StepRow:
    return StepRow(fid, "f", serialize(value, "test"), None, None, 0)


def test_call_outside_a_workflow_just_calls() -> None:
    assert _durable.call(FakeHost(), "f", lambda x: x + 1, 1) == 2


def test_call_records_once_and_a_replay_never_calls() -> None:
    host = FakeHost()
    _in_workflow()
    assert _durable.call(host, "f", lambda: 7) == 7
    assert deserialize(host.sysdb.rows[1].output) == 7

    def never() -> int:
        raise AssertionError("a recorded call ran again")

    _in_workflow(recorded={1: _row(1, 7)})
    assert _durable.call(host, "f", never) == 7


def test_async_call_shares_the_operation() -> None:
    host = FakeHost()
    ctx = _in_workflow()

    async def seven() -> int:
        return 7

    async def run() -> int:
        return await _durable.call_async(host, "f", seven)

    assert asyncio.run(run()) == 7
    assert ctx.next_function_id == 1
    assert deserialize(host.sysdb.rows[1].output) == 7


def test_a_conflict_returns_the_other_execution_s_outcome() -> None:
    host = FakeHost()
    host.sysdb.rows[1] = _row(1, "theirs")
    host.sysdb.outcome = "conflict"
    _in_workflow()
    assert _durable.call(host, "f", lambda: "ours") == "theirs"


def test_not_pending_cancels_and_a_closed_database_interrupts() -> None:
    host = FakeHost()
    host.sysdb.outcome = "not-pending"
    ctx = _in_workflow()
    with pytest.raises(DBOSWorkflowCancelledError):
        _durable.call(host, "f", lambda: 1)
    assert ctx.entry.cancelled
    host.sysdb.closed = True
    _in_workflow()
    with pytest.raises(WorkflowInterrupted):
        _durable.call(host, "f", lambda: 1)


def test_the_boundary_is_checked_before_acting_but_not_on_a_replay() -> None:
    host = FakeHost(interrupting=True)
    _in_workflow(recorded={1: _row(1, "done")})
    assert _durable.call(host, "f", lambda: "again") == "done"
    _in_workflow()
    with pytest.raises(WorkflowInterrupted):
        _durable.call(host, "f", lambda: "again")


def test_write_once_skips_the_write_on_a_replay() -> None:
    host = FakeHost()
    writes: list[int] = []

    def write(fid: int) -> str:
        writes.append(fid)
        return "recorded"

    assert _durable.write_once(host, _in_workflow(), write)
    assert not _durable.write_once(host, _in_workflow(recorded={1: _row(1, None)}), write)
    assert writes == [1]
