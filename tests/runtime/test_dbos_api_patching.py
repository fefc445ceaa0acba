"""DBOS 2.30's patching on both backends: DBOS.patch / deprecate_patch let new code run
new workflows while workflows recorded under the old code recover the old way."""

from __future__ import annotations

import asyncio
import collections

import pytest

from spindle import DBOS, DBOSException, SetWorkflowID
from spindle.runtime._schema import workflow_status
from tests.conftest import MakeDBOS

#: Which release of the workflow's code is "deployed" (1: old, 2: patched, 3: deprecated).
CODE = {"release": 1}
RUNS: collections.Counter[str] = collections.Counter()


@DBOS.step()
def p_step(name: str) -> str:
    RUNS[name] += 1
    return name


@DBOS.workflow()
def patched_workflow() -> list[str]:
    out = [p_step("a")]
    if CODE["release"] == 1:
        out.append(p_step("old"))
    elif CODE["release"] == 2:
        out.append(p_step("new") if DBOS.patch("use-new") else p_step("old"))
    else:
        DBOS.deprecate_patch("use-new")
        out.append(p_step("new"))
    out.append(p_step("c"))
    return out


@DBOS.workflow()
async def async_patched() -> bool:
    return await DBOS.patch_async("p") and await DBOS.deprecate_patch_async("p")


def _steps(workflow_id: str) -> list[str]:
    return [s["function_name"] for s in DBOS.list_workflow_steps(workflow_id)]


def _recover(workflow_id: str) -> list[str]:
    """Put a finished workflow back to PENDING, restart the app: recovery replays it."""
    with DBOS.runtime.sysdb.engine.begin() as conn:
        conn.execute(
            workflow_status.update()
            .where(workflow_status.c.workflow_uuid == workflow_id)
            .values(status="PENDING", output=None)
        )
    DBOS.destroy()
    DBOS.launch()
    result: list[str] = DBOS.retrieve_workflow(workflow_id).get_result()
    return result


def test_patch_then_deprecate(make_dbos: MakeDBOS) -> None:
    RUNS.clear()
    make_dbos(enable_patching=True).launch()
    CODE["release"] = 1
    with SetWorkflowID("before-patch"):
        assert patched_workflow() == ["a", "old", "c"]
    CODE["release"] = 2
    # Old history: patch() is False at the position of the old step, which replays.
    assert _recover("before-patch") == ["a", "old", "c"]
    assert RUNS["old"] == 1
    assert _steps("before-patch") == ["p_step", "p_step", "p_step"]
    # A new execution records the marker and runs the new code.
    with SetWorkflowID("after-patch"):
        assert patched_workflow() == ["a", "new", "c"]
    assert _steps("after-patch") == ["p_step", "DBOS.patch-use-new", "p_step", "p_step"]
    assert _recover("after-patch") == ["a", "new", "c"]
    assert RUNS["new"] == 1  # replayed: the marker put the replay on the new path
    CODE["release"] = 3
    # deprecate_patch steps over the marker of histories that have it...
    assert _recover("after-patch") == ["a", "new", "c"]
    assert RUNS["new"] == 1
    # ...and records none for new executions.
    with SetWorkflowID("deprecated"):
        assert patched_workflow() == ["a", "new", "c"]
    assert _steps("deprecated") == ["p_step", "p_step", "p_step"]
    CODE["release"] = 1


def test_patch_needs_the_config_and_a_workflow(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    CODE["release"] = 2
    try:
        with pytest.raises(DBOSException, match="enable_patching must be True"):
            patched_workflow()
    finally:
        CODE["release"] = 1
    DBOS.destroy()
    make_dbos(enable_patching=True).launch()
    with pytest.raises(DBOSException, match=r"DBOS\.patch must be called from a workflow"):
        DBOS.patch("x")
    assert asyncio.run(async_patched()) is True
