"""DBOS 2.30's class-based workflows on both backends: ``@DBOS.dbos_class()``,
``DBOSConfiguredInstance``, instance/class/static methods as workflows, steps and
transactions, recovery and queues finding the instance by class and config name."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import DBOS, DBOSConfiguredInstance, Queue, SetWorkflowID
from spindle.runtime._schema import workflow_status
from tests.conftest import MakeDBOS

class_queue = Queue("class-queue")


@DBOS.dbos_class()
class Counter(DBOSConfiguredInstance):
    def __init__(self, config_name: str, factor: int) -> None:
        # Holds a lock: an instance is never pickled with its workflows' inputs.
        self.lock = threading.Lock()
        self.factor = factor
        self.calls: list[str] = []
        super().__init__(config_name)

    @DBOS.workflow()
    def scaled(self, x: int) -> int:
        return self.times(x) + self.label_step()

    @DBOS.step()
    def times(self, x: int) -> int:
        with self.lock:
            self.calls.append(f"times({x})")
        return x * self.factor

    @DBOS.step()
    def label_step(self) -> int:
        return len(self.config_name)

    @classmethod
    @DBOS.workflow()
    def class_wf(cls, x: int) -> str:
        return f"{cls.__name__}:{x}"

    @staticmethod
    @DBOS.workflow()
    def static_wf(x: int) -> int:
        return x + 1


@DBOS.dbos_class("renamed-holder")
class Holder:
    @classmethod
    @DBOS.workflow()
    def named(cls, x: int) -> str:
        return f"{cls.__qualname__}-{x}"


# Two instances of one class, each found by its own config name.
small = Counter("small", 2)
large = Counter("large", 100)


def test_instance_class_and_static_workflows(dbos: type[DBOS]) -> None:
    with SetWorkflowID("inst-1"):
        assert large.scaled(3) == 300 + len("large")
    assert small.scaled(3) == 6 + len("small")
    assert Counter.class_wf(4) == "Counter:4"
    assert Counter.static_wf(4) == 5
    assert Holder.named(1) == "Holder-1"

    status = DBOS.get_workflow_status("inst-1")
    assert status is not None
    assert (status.name, status.class_name, status.config_name) == (
        "Counter.scaled",
        "Counter",
        "large",
    )
    # As DBOS: the stored input has no self.
    assert status.input == ((3,), {})
    by_name = {s.name: s for s in DBOS.list_workflows()}
    assert by_name["Counter.class_wf"].class_name == "Counter"
    assert by_name["Counter.class_wf"].config_name is None
    assert by_name["Counter.static_wf"].class_name is None
    assert by_name["Holder.named"].class_name == "renamed-holder"


def test_start_workflow_and_queue_with_bound_methods(dbos: type[DBOS]) -> None:
    assert DBOS.start_workflow(small.scaled, 5).get_result() == 10 + len("small")
    assert DBOS.start_workflow(Counter.class_wf, 6).get_result() == "Counter:6"
    assert class_queue.enqueue(large.scaled, 1).get_result() == 100 + len("large")
    assert class_queue.enqueue(Counter.static_wf, 1).get_result() == 2
    # A step method started on its own runs in DBOS's temporary workflow.
    assert DBOS.start_workflow(small.times, 7).get_result() == 14


def _make_pending(workflow_id: str) -> None:
    with DBOS.runtime.sysdb.engine.begin() as conn:
        conn.execute(
            workflow_status.update()
            .where(workflow_status.c.workflow_uuid == workflow_id)
            .values(status="PENDING", output=None)
        )


def test_recovery_finds_the_instance_by_class_and_config_name(make_dbos: MakeDBOS) -> None:
    make_dbos().launch()
    with SetWorkflowID("recover-inst"):
        assert large.scaled(2) == 200 + len("large")
    with SetWorkflowID("recover-cls"):
        Counter.class_wf(9)
    _make_pending("recover-inst")
    _make_pending("recover-cls")
    DBOS.destroy()
    large.calls.clear()
    DBOS.launch()  # recovers both PENDING workflows
    assert DBOS.retrieve_workflow("recover-inst").get_result() == 200 + len("large")
    assert DBOS.retrieve_workflow("recover-cls").get_result() == "Counter:9"
    # Replayed from its checkpoint: the step did not run again.
    assert large.calls == []


def test_unregistered_instance_is_not_run_and_stays_pending(
    make_dbos: MakeDBOS, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored call whose configured instance this process never registered is not run
    (DBOS's not-found error) and stays PENDING for a process that has it."""
    from spindle.runtime import _classes

    make_dbos().launch()
    temp = Counter("temporary", 7)
    with SetWorkflowID("orphan"):
        temp.scaled(1)
    _make_pending("orphan")
    DBOS.destroy()
    del _classes.INSTANCES["Counter/temporary"]
    caplog.set_level(logging.WARNING)
    DBOS.launch()
    status = DBOS.get_workflow_status("orphan")
    assert status is not None
    assert status.status == "PENDING"
    with pytest.raises(Exception, match="'Counter/temporary' is not registered"):
        DBOS.resume_workflow("orphan")


@pytest.fixture
def scratch_registry() -> Any:
    """Classes and instances a test registers are forgotten after it (it runs per backend)."""
    from spindle.runtime import _classes

    classes, instances = dict(_classes.CLASSES), dict(_classes.INSTANCES)
    yield
    _classes.CLASSES.clear()
    _classes.CLASSES.update(classes)
    _classes.INSTANCES.clear()
    _classes.INSTANCES.update(instances)


@pytest.mark.usefixtures("scratch_registry")
def test_registration_errors(dbos: type[DBOS], caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(Exception, match="Duplicate instance registration for class 'Counter'"):
        Counter("small", 3)
    caplog.set_level(logging.WARNING, logger="dbos")
    late = Counter("late", 1)
    assert any("registered after DBOS was launched" in r.getMessage() for r in caplog.records)
    assert late.scaled(1) == 1 + len("late")

    class Plain:  # a method of a class that was never decorated
        @DBOS.workflow()
        def method(self, x: int) -> int:
            return x

    with pytest.raises(Exception, match="not properly registered"):
        Plain().method(1)

    @DBOS.dbos_class()
    class NoConfig:
        @DBOS.workflow()
        def method(self, x: int) -> int:
            return x

    with pytest.raises(Exception, match="does not have `config_name` set"):
        NoConfig().method(1)

    with pytest.raises(Exception, match="Duplicate type registration for class 'Counter'"):

        @DBOS.dbos_class("Counter")
        class Other:
            pass


@pytest.mark.usefixtures("scratch_registry")
def test_a_transaction_method(make_dbos: MakeDBOS, app_db_url: str) -> None:
    @DBOS.dbos_class()
    class Ledger(DBOSConfiguredInstance):
        @DBOS.transaction()
        def add(self, x: int) -> Any:
            return DBOS.sql_session.execute(sa.text("SELECT :x + 1"), {"x": x}).scalar_one()

    ledger = Ledger("main")
    make_dbos(application_database_url=app_db_url).launch()
    # Outside a workflow: DBOS's temporary workflow, with the instance stored by name.
    assert ledger.add(1) == 2
    temp = [s for s in DBOS.list_workflows() if s.name.endswith("Ledger.add")]
    assert [(s.class_name, s.config_name) for s in temp] == [(Ledger.__qualname__, "main")]
