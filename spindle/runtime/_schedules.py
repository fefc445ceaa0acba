"""Dynamic schedules: the schedules table and the thread that runs one child per schedule."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, cast

import sqlalchemy as sa

from spindle.diagnostics import StopEvent, ThreadGroup, ThreadKind

from ._cron import check_cron, cron_body
from ._db_retry import Retrier, retried
from ._errors import DBOSException
from ._functions import GLOBAL_REGISTRY
from ._pollers import PollerGate
from ._rows import now_ms
from ._schema import workflow_schedules as sched
from ._serialization import Codecs
from ._supervisor import Supervised
from ._sysdb import SystemDatabase

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

ACTIVE = "ACTIVE"
PAUSED = "PAUSED"


class WorkflowSchedule(TypedDict):
    """A dynamic schedule, with DBOS 2.30's keys (``last_fired_at`` aside: not tracked)."""

    schedule_id: str
    schedule_name: str
    workflow_name: str
    schedule: str
    status: str  # "ACTIVE" or "PAUSED"
    context: Any
    #: What Spindle's schedules always are: no class, no automatic backfill, UTC cron, run
    #: directly (no queue), owned by no application in particular.
    workflow_class_name: str | None
    automatic_backfill: bool
    cron_timezone: str | None
    queue_name: str | None
    application_name: str | None


_FIXED: dict[str, Any] = {
    "workflow_class_name": None,
    "automatic_backfill": False,
    "cron_timezone": None,
    "queue_name": None,
    "application_name": None,
}
# The columns of a WorkflowSchedule are its other keys, read by name.
_COLUMNS = (
    *(sched.c[key] for key in WorkflowSchedule.__annotations__ if key not in _FIXED),
    sched.c.serialization,
)

#: A schedule's context as stored: its bytes and their format.
StoredContext = tuple[bytes, str | None]


def _row(codecs: Codecs, r: Any) -> WorkflowSchedule:
    row = dict(r._mapping)
    row["context"] = codecs.decode(row["context"], row.pop("serialization"))
    row.update(_FIXED)
    return cast(WorkflowSchedule, row)


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


class ScheduleStore:
    """The schedules table, behind the system database's close gate.

    The queries live here rather than in ``_sysdb.py``: they are this feature's alone, and
    ``SystemDatabase.transaction`` gives them the same gate (and interruption) as every other query.
    """

    def __init__(self, sysdb: SystemDatabase) -> None:
        self._db = sysdb

    @property
    def retrier(self) -> Retrier:
        """The system database's retry of transient errors (:mod:`._db_retry`)."""
        return self._db.retrier

    @retried
    def create(self, name: str, workflow_name: str, cron: str, context: StoredContext) -> bool:
        """Insert a schedule; False if one with this name exists."""
        now = now_ms()
        stmt = (
            self._db.dialect_insert(sched)
            .values(
                schedule_id=str(uuid.uuid4()),
                schedule_name=name,
                workflow_name=workflow_name,
                schedule=cron,
                status=ACTIVE,
                context=context[0],
                serialization=context[1],
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[sched.c.schedule_name])
            .returning(sched.c.schedule_id)
        )
        with self._db.transaction() as conn:
            return len(conn.execute(stmt).all()) == 1

    @retried
    def replace_all(self, rows: Sequence[tuple[str, str, str, StoredContext]]) -> None:
        """Create or replace each ``(name, workflow_name, cron, context)`` schedule, all in
        one transaction (``DBOS.apply_schedules``): a replaced schedule is ACTIVE again."""
        now = now_ms()
        with self._db.transaction() as conn:
            for name, workflow_name, cron, context in rows:
                conn.execute(sched.delete().where(sched.c.schedule_name == name))
                conn.execute(
                    sched.insert().values(
                        schedule_id=str(uuid.uuid4()),
                        schedule_name=name,
                        workflow_name=workflow_name,
                        schedule=cron,
                        status=ACTIVE,
                        context=context[0],
                        serialization=context[1],
                        created_at=now,
                        updated_at=now,
                    )
                )

    @retried
    def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        workflow_name: str | Sequence[str] | None = None,
        schedule_name_prefix: str | Sequence[str] | None = None,
    ) -> list[WorkflowSchedule]:
        """Schedules matching every given filter, by name."""
        stmt = sa.select(*_COLUMNS).order_by(sched.c.schedule_name)
        statuses = _as_list(status)
        if statuses is not None:
            stmt = stmt.where(sched.c.status.in_(statuses))
        names = _as_list(workflow_name)
        if names is not None:
            stmt = stmt.where(sched.c.workflow_name.in_(names))
        prefixes = _as_list(schedule_name_prefix)
        if prefixes is not None:
            stmt = stmt.where(
                sa.or_(*(sched.c.schedule_name.startswith(p, autoescape=True) for p in prefixes))
            )
        with self._db.transaction(read=True) as conn:
            return [_row(self._db.codecs, r) for r in conn.execute(stmt)]

    @retried
    def get(self, name: str) -> WorkflowSchedule | None:
        """One schedule by name."""
        stmt = sa.select(*_COLUMNS).where(sched.c.schedule_name == name)
        with self._db.transaction(read=True) as conn:
            row = conn.execute(stmt).one_or_none()
        return _row(self._db.codecs, row) if row is not None else None

    @retried
    def delete(self, name: str) -> None:
        """Delete a schedule (no-op if it does not exist)."""
        with self._db.transaction() as conn:
            conn.execute(sched.delete().where(sched.c.schedule_name == name))

    @retried
    def set_status(self, name: str, status: str) -> bool:
        """Pause or resume; False if no such schedule."""
        stmt = (
            sched.update()
            .where(sched.c.schedule_name == name)
            .values(status=status, updated_at=now_ms())
            .returning(sched.c.schedule_id)
        )
        with self._db.transaction() as conn:
            return len(conn.execute(stmt).all()) == 1


def validate_new_schedule(name: str, workflow_name: str, cron: str) -> None:
    """Check a schedule before it is stored: name, workflow and crontab."""
    if not isinstance(name, str) or not name:
        raise ValueError("schedule_name must be a non-empty string")
    check_cron(cron, f"schedule {name!r}")
    if GLOBAL_REGISTRY.workflow(workflow_name) is None:
        raise DBOSException(f"{workflow_name!r} is not a registered @DBOS.workflow()")


def encode_context(codecs: Codecs, name: str, context: Any) -> StoredContext:
    """Serialize a schedule's context (passed to every run of its workflow) with the
    application's serializer, and name its format."""
    codec = codecs.app
    return codec.encode(context, f"the context of schedule {name!r}"), codec.format


@dataclass(frozen=True, slots=True)
class _Child:
    """A running schedule thread and the row version it runs."""

    key: tuple[str, str, str]
    thread: Supervised


class DynamicScheduler:
    """``dbos-dynamic-scheduler``: polls the schedules table every
    ``scheduler_polling_interval_sec`` and runs one ``dbos-schedule[<name>]`` child per
    active schedule; a deleted, paused or changed schedule's child is stopped and joined.

    Children are registered as the scheduler's children (``parent_id``), in the poller
    group, so shutdown phase 1 signals them with the scheduler.
    """

    def __init__(self, rt: Runtime, gate: PollerGate) -> None:
        self._rt = rt
        self._gate = gate
        self._store = ScheduleStore(rt.sysdb)
        self._interval = rt.config.scheduler_polling_interval_sec
        self._cond = threading.Condition()
        self._poked = False
        self._children: dict[str, _Child] = {}
        self._unknown: set[str] = set()  # schedule ids already warned about, logged once
        self.thread: Supervised | None = None

    def start(self) -> None:
        """Spawn the scheduler thread."""
        self.thread = self._rt.supervisor.spawn(
            ThreadKind.SCHEDULER, "dbos-dynamic-scheduler", self._run, group=ThreadGroup.POLLER
        )

    def poke(self) -> None:
        """Poll now instead of at the end of the interval."""
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    def children(self) -> dict[str, Supervised]:
        """The live schedule threads, by schedule name (for tests and the dashboard)."""
        return {name: child.thread for name, child in list(self._children.items())}

    def _run(self, stop: StopEvent) -> None:
        stop.add_callback(self.poke)
        clock = self._rt.clock
        try:
            while not stop.is_set():
                try:
                    rows = self._store.list(status=ACTIVE)
                except Exception:
                    if stop.is_set():
                        return
                    logger.exception("spindle: polling the schedules table failed")
                else:
                    self._reconcile(rows, stop)
                with self._cond:
                    deadline = clock.now() + self._interval
                    while not stop.is_set() and not self._poked:
                        left = deadline - clock.now()
                        if left <= 0:
                            break
                        clock.wait(self._cond, left)
                    self._poked = False
        finally:
            # Shutdown phase 1 signals the children too; this covers any it could not see.
            # No join here: joins belong to phase 9, after blocking DB calls are interrupted.
            for child in self._children.values():
                child.thread.stop.set()

    def _reconcile(self, rows: list[WorkflowSchedule], stop: StopEvent) -> None:
        wanted: dict[str, WorkflowSchedule] = {r["schedule_name"]: r for r in rows}
        # Inside the gate: destroy() closes it before phase 1, so the scheduler never spawns
        # (or joins) a child while the shutdown is being recorded.
        with self._gate.enter() as admitted:
            if not admitted or stop.is_set():
                return
            for name, child in list(self._children.items()):
                row = wanted.get(name)
                if row is None or _key(row) != child.key:
                    self._stop_child(name, child)
            for name, row in wanted.items():
                if name not in self._children:
                    self._start_child(row)

    def _stop_child(self, name: str, child: _Child) -> None:
        del self._children[name]
        child.thread.stop.set()
        self._rt.supervisor.reap(child.thread, self._rt.config.thread_join_timeout_sec)
        # Schedules come and go for the app's whole life: keep the supervisor's list bounded.
        self._rt.supervisor.forget_exited()

    def _start_child(self, row: WorkflowSchedule) -> None:
        name = row["schedule_name"]
        info = GLOBAL_REGISTRY.workflow(row["workflow_name"])
        if info is None:
            if row["schedule_id"] in self._unknown:
                return
            self._unknown.add(row["schedule_id"])
            logger.warning(
                "spindle: schedule %r runs %r, which this process has not registered",
                name,
                row["workflow_name"],
            )
            return
        context = row["context"]
        body = cron_body(
            self._rt,
            self._gate,
            id_prefix=name,
            info=info,
            cron=row["schedule"],
            make_args=lambda tick, _actual: (tick, context),
        )
        assert self.thread is not None
        thread = self._rt.supervisor.spawn(
            ThreadKind.SCHEDULER,
            f"dbos-schedule[{name}]",
            body,
            group=ThreadGroup.POLLER,
            parent=self.thread.record,
        )
        self._children[name] = _Child(_key(row), thread)


def _key(row: WorkflowSchedule) -> tuple[str, str, str]:
    """What makes a running child stale: a new row under the same name, or a new cron."""
    return (row["schedule_id"], row["workflow_name"], row["schedule"])
