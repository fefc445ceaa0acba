"""DBOS 2.30's roles on both backends: required_roles, default_required_roles,
DBOSContextSetAuth, set_authentication, the identity on the status and after recovery."""

from __future__ import annotations

from typing import Any

import pytest

from spindle import (
    DBOS,
    DBOSConfiguredInstance,
    DBOSContextSetAuth,
    Queue,
    SetWorkflowID,
    error,
)
from spindle.runtime._schema import workflow_status
from tests.conftest import MakeDBOS

roles_queue = Queue("roles-queue", polling_interval_sec=0.1)


def _identity() -> list[Any]:
    return [DBOS.authenticated_user, DBOS.authenticated_roles, DBOS.assumed_role]


@DBOS.required_roles(["admin"])
@DBOS.step()
def admin_step() -> list[Any]:
    return _identity()


@DBOS.required_roles(["admin", "user"])
@DBOS.workflow()
def guarded_workflow(with_admin_step: bool) -> dict[str, Any]:
    seen: dict[str, Any] = {"body": _identity()}
    if with_admin_step:
        seen["step"] = admin_step()
    return seen


@DBOS.workflow()
def open_workflow() -> list[Any]:
    return _identity()


@DBOS.dbos_class()
@DBOS.default_required_roles(["user"])
class Desk(DBOSConfiguredInstance):
    @DBOS.workflow()
    def ordinary(self) -> list[Any]:
        return _identity()

    @DBOS.required_roles(["admin"])
    @DBOS.workflow()
    def special(self) -> list[Any]:
        return _identity()


desk = Desk("front")


def test_required_roles_and_the_recorded_identity(dbos: type[DBOS]) -> None:
    with pytest.raises(error.DBOSNotAuthorizedError, match="called in a context without auth"):
        guarded_workflow(False)
    no_role = pytest.raises(error.DBOSNotAuthorizedError, match="not authenticated for any")
    with DBOSContextSetAuth("bob", ["guest"]), no_role:
        guarded_workflow(False)
    with DBOSContextSetAuth("alice", ["user", "admin"]), SetWorkflowID("auth-1"):
        seen = guarded_workflow(True)
    assert seen["body"] == ["alice", ["user", "admin"], "admin"]  # the first required she has
    assert seen["step"] == ["alice", ["user", "admin"], "admin"]
    assert DBOS.authenticated_user is None  # the block restored the context
    status = DBOS.get_workflow_status("auth-1")
    assert status is not None
    assert (status.authenticated_user, status.authenticated_roles, status.assumed_role) == (
        "alice",
        ["user", "admin"],
        "admin",
    )
    assert status.input == ((True,), {})  # the identity is not part of the input
    # A step with a role the user lacks fails inside the workflow.
    with DBOSContextSetAuth("carol", ["user"]), pytest.raises(error.DBOSNotAuthorizedError):
        guarded_workflow(True)


def test_identity_reaches_queues_and_recovery(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    DBOS.set_authentication("dan", ["user"])
    try:
        handle = roles_queue.enqueue(open_workflow)
        with SetWorkflowID("auth-recover"):
            assert guarded_workflow(False)["body"] == ["dan", ["user"], "user"]
        started = DBOS.start_workflow(open_workflow)
    finally:
        DBOS.set_authentication(None, None)
    assert handle.get_result() == ["dan", ["user"], None]
    assert started.get_result() == ["dan", ["user"], None]
    with DBOS.runtime.sysdb.engine.begin() as conn:
        conn.execute(
            workflow_status.update()
            .where(workflow_status.c.workflow_uuid == "auth-recover")
            .values(status="PENDING", output=None)
        )
    DBOS.destroy()
    DBOS.launch()  # recovery runs the body as the identity it was started with
    assert DBOS.retrieve_workflow("auth-recover").get_result()["body"] == [
        "dan",
        ["user"],
        "user",
    ]


def test_class_default_roles(dbos: type[DBOS]) -> None:
    with pytest.raises(error.DBOSNotAuthorizedError, match=r"Desk\.ordinary requires a role"):
        desk.ordinary()
    with DBOSContextSetAuth("erin", ["user"]):
        assert desk.ordinary() == ["erin", ["user"], "user"]
        with pytest.raises(error.DBOSNotAuthorizedError, match=r"Desk\.special has required roles"):
            desk.special()  # its own roles replace the class's
        with pytest.raises(error.DBOSNotAuthorizedError):
            DBOS.start_workflow(desk.special)
    with DBOSContextSetAuth("frank", ["admin"]):
        assert desk.special() == ["frank", ["admin"], "admin"]
        assert DBOS.start_workflow(desk.special).get_result() == ["frank", ["admin"], "admin"]
