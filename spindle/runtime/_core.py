"""Running workflows and steps: checkpoints, replay, cancellation and interruption."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._active import ActiveWorkflow
from ._attributes import for_new_workflow as attributes_for_new_workflow
from ._attributes import store as store_attributes
from ._context import (
    _UNSET,
    WorkflowContext,
    current_workflow,
    next_timeout,
    next_workflow_id,
    timeout_is_set,
)
from ._durable import (
    Call,
    Op,
    PreemptibleCall,
    check_boundary,
    drive,
    drive_async,
    sleep,
    step,
)
from ._errors import (
    DBOSConflictingWorkflowError,
    DBOSRuntimeShutdownError,
    DBOSSerializationError,
    DBOSWorkflowCancelledError,
    WorkflowInterrupted,
)
from ._functions import StepInfo, WorkflowInfo
from ._identity_columns import identity_columns
from ._rows import CANCELLED, ERROR, SUCCESS, TERMINAL, StatusRow, StepRow
from ._serialization import NATIVE, Codec, Codecs
from ._sysdb_gate import SystemDatabaseClosed

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")


@dataclass(slots=True)
class Start:
    """What starting a workflow decided: the entry and how (or whether) to run it."""

    entry: ActiveWorkflow
    created: bool
    run: Callable[[], Any] | None = None


def _shutdown_error(workflow_id: str) -> DBOSRuntimeShutdownError:
    return DBOSRuntimeShutdownError(
        f"the runtime shut down; workflow {workflow_id!r} stays PENDING for recovery"
    )


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a workflow about to start is: its ID, its parent, and its timeout/deadline."""

    workflow_id: str
    timeout_ms: int | None
    deadline_epoch_ms: int | None
    #: True when ``SetWorkflowTimeout`` gave it a timeout (not inherited from its parent).
    own_timeout: bool
    #: The parent's context and the function id its start takes there (None: no parent).
    parent: WorkflowContext | None
    child_fid: int | None

    @property
    def parent_workflow_id(self) -> str | None:
        """The parent workflow's ID (None: started outside a workflow)."""
        return None if self.parent is None else self.parent.workflow_id


def resolve_identity(rt: Runtime, workflow_id: str | None = None) -> Identity:
    """Name the next workflow: consumes ``SetWorkflowID`` and takes a child function id."""
    parent = current_workflow.get()
    explicit = next_workflow_id.get()
    if explicit is not None:
        next_workflow_id.set(None)  # SetWorkflowID names the next workflow only
    child_fid = parent.next_id() if parent is not None else None
    started = _recorded_child(parent, child_fid)
    if started is not None:
        # Replayed (recovery, or a fork that copied the start): the child it started then,
        # as DBOS does; a fork's children before its start step are not run again.
        wf_id = started
    elif explicit is not None:
        wf_id = explicit
    elif workflow_id is not None:
        wf_id = workflow_id
    elif parent is not None:
        # Deterministic, so a replayed parent finds the same child.
        wf_id = f"{parent.workflow_id}-{child_fid}"
    else:
        wf_id = str(uuid.uuid4())

    timeout = next_timeout.get()
    timeout_ms: int | None = None
    deadline_ms: int | None = None
    own = timeout_is_set(timeout)
    if own:
        if timeout is not None:
            timeout_ms = int(timeout * 1000)
            deadline_ms = int(rt.clock.now() * 1000) + timeout_ms
    elif parent is not None:
        deadline_ms = parent.deadline_epoch_ms
    return Identity(wf_id, timeout_ms, deadline_ms, own, parent, child_fid)


def _recorded_child(parent: WorkflowContext | None, fid: int | None) -> str | None:
    if parent is None or fid is None or parent.recorded is None:
        return None
    row = parent.recorded.get(fid)
    return row.child_workflow_id if row is not None else None


def record_child_start(rt: Runtime, ident: Identity, name: str) -> None:
    """Record a child's start in its parent's steps, as DBOS lists it: a step named as the
    child's workflow, with its ID (``list_workflow_steps``' ``child_workflow_id``).

    After the child's insert, not in its transaction: the child's ID is derived from the
    parent's, so a parent recovered between the two finds the same child and records it
    then. A cancelled parent (``not-pending``) is not stopped here but at its next boundary:
    raising now would leave the child just inserted with no thread to run it.
    """
    parent, fid = ident.parent, ident.child_fid
    if parent is None or fid is None or parent.in_step:
        return  # a step is its own checkpoint: what it starts is not a step of the parent
    recorded = parent.recorded
    if recorded is not None and fid in recorded:
        return
    try:
        rt.sysdb.record_step(
            parent.workflow_id,
            fid,
            name,
            output=None,
            error=None,
            child_workflow_id=ident.workflow_id,
        )
    except SystemDatabaseClosed as exc:
        raise WorkflowInterrupted() from exc


def prepare_workflow(
    rt: Runtime,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    workflow_id: str | None = None,
    queue_name: str | None = None,
    if_new: bool = False,
) -> Start:
    """Claim a workflow ID in this process and checkpoint the workflow's start.

    Returns the in-flight entry; ``run`` is set when the caller must run it (it created it),
    and is a coroutine function for async workflows. With ``if_new``, an ID that already has
    a status row (from any process) is left alone, even if PENDING: pollers start each tick
    or message once, and a PENDING row belongs to whoever inserted it (or to recovery).
    """
    rt.require_launched()
    ident = resolve_identity(rt, workflow_id)
    wf_id = ident.workflow_id
    deadline_ms = ident.deadline_epoch_ms

    entry, created = rt.active.acquire(wf_id, is_async=info.is_async)
    if not created:
        record_child_start(rt, ident, info.name)  # in flight here: started before
        return Start(entry, False)
    codecs = rt.sysdb.codecs
    try:
        codec = entry.codec = codecs.for_type(info.serialization_type)
        inputs = codec.encode_inputs(args, kwargs, f"the inputs of workflow {info.name!r}")
        existing = rt.sysdb.insert_workflow(
            workflow_id=wf_id,
            name=info.name,
            inputs=inputs,
            executor_id=rt.config.executor_id,
            application_version=rt.config.application_version,
            parent_workflow_id=ident.parent_workflow_id,
            timeout_ms=ident.timeout_ms,
            deadline_epoch_ms=deadline_ms,
            queue_name=queue_name,
            identity=identity_columns(args, kwargs),
            serialization=codec.format,
        )
    except BaseException:
        rt.active.release(entry)
        raise
    if existing is None:
        attributes = attributes_for_new_workflow()  # one context read when none are set
        if attributes is not None:
            store_attributes(rt.sysdb, wf_id, attributes)
    recorded: dict[int, StepRow] | None = None
    if existing is not None and if_new:
        rt.active.release(entry)
        return Start(entry, False)
    if existing is not None and existing.name != info.name:
        rt.active.release(entry)
        raise DBOSConflictingWorkflowError(
            wf_id,
            f"Workflow already exists with a different function name: {existing.name}, "
            f"but the provided function name is: {info.name}",
        )
    if ident.parent is not None:
        try:
            record_child_start(rt, ident, info.name)
        except BaseException:
            rt.active.release(entry)
            raise
    if existing is not None:
        if existing.status in TERMINAL:
            _publish_row(codecs, entry, existing)
            rt.active.release(entry)
            return Start(entry, False)
        # PENDING (recovery, or the same ID again after a crash): replay its history, and
        # end it in the format its row was started in.
        try:
            entry.codec = codecs.get(existing.serialization)
        except BaseException:
            rt.active.release(entry)
            raise
        deadline_ms = existing.workflow_deadline_epoch_ms
        recorded = rt.sysdb.step_outputs(wf_id)
    return _runnable(rt, entry, info, args, kwargs, deadline_ms, recorded)


def start_dequeued(
    rt: Runtime,
    info: WorkflowInfo,
    workflow_id: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    deadline_ms: int | None,
    recorded: dict[int, StepRow] | None,
    codec: Codec = NATIVE,
) -> Start:
    """Start a workflow whose row a queue worker just set PENDING: no insert, no read.

    ``run`` is None when the ID is already in flight in this process. ``codec``: the
    format of its row, which its output and error are written in.
    """
    entry, created = rt.active.acquire(workflow_id, is_async=info.is_async)
    if not created:
        return Start(entry, False)
    entry.codec = codec
    entry.dequeued = True
    return _runnable(rt, entry, info, args, kwargs, deadline_ms, recorded)


def _runnable(
    rt: Runtime,
    entry: ActiveWorkflow,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_ms: int | None,
    recorded: dict[int, StepRow] | None,
) -> Start:
    wf_id = entry.workflow_id
    if deadline_ms is not None:
        rt.timeouts.add(wf_id, deadline_ms / 1000)

    if info.is_async:

        async def run_async() -> Any:
            return await _run_workflow_async(rt, entry, info, args, kwargs, deadline_ms, recorded)

        return Start(entry, True, run_async)

    def run() -> Any:
        return _run_workflow(rt, entry, info, args, kwargs, deadline_ms, recorded)

    entry.runner = run
    return Start(entry, True, run)


def _publish_row(codecs: Codecs, entry: ActiveWorkflow, row: StatusRow) -> None:
    status = row.status
    try:
        if status == SUCCESS:
            entry.finish(result=codecs.decode(row.output, row.serialization))
        elif status == ERROR and row.error is not None:
            entry.finish(error=codecs.decode_error(row.error, row.serialization))
    except DBOSSerializationError as exc:  # a format this process cannot read
        entry.finish(error=exc)
    if status == CANCELLED:
        entry.cancel()


def _enter(
    rt: Runtime,
    entry: ActiveWorkflow,
    info: WorkflowInfo,
    deadline_ms: int | None,
    recorded: dict[int, StepRow] | None,
) -> tuple[Any, Any, Any, Any]:
    ctx = WorkflowContext(entry.workflow_id, info.name, entry, deadline_ms, recorded)
    record = None if info.is_async else rt.registry.own_record()
    outer = None
    if record is not None:
        # The thread's record says which workflow it runs (dashboard, shutdown report); a
        # child run inline puts its parent's back on leaving. One attribute store: cheap.
        ctx.record = record
        outer = record.work
        record.work = (entry.workflow_id, info.name, None, None)
    # The body starts with a clean slate: a SetWorkflowID/Timeout around the *call* must not
    # leak into the children the body starts (they inherit the deadline instead).
    return (
        current_workflow.set(ctx),
        next_workflow_id.set(None),
        next_timeout.set(_UNSET),
        (record, outer),
    )


def _leave(tokens: tuple[Any, Any, Any, Any]) -> None:
    current_workflow.reset(tokens[0])
    next_workflow_id.reset(tokens[1])
    next_timeout.reset(tokens[2])
    record, outer = tokens[3]
    if record is not None:
        record.work = outer


def _run_workflow(
    rt: Runtime,
    entry: ActiveWorkflow,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_ms: int | None,
    recorded: dict[int, StepRow] | None,
) -> Any:
    return drive(_workflow(rt, entry, info, args, kwargs, deadline_ms, recorded))


async def _run_workflow_async(
    rt: Runtime,
    entry: ActiveWorkflow,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_ms: int | None,
    recorded: dict[int, StepRow] | None,
) -> Any:
    if not entry.claim():
        return await wait_async(entry)
    return await drive_async(_workflow(rt, entry, info, args, kwargs, deadline_ms, recorded))


def _workflow(
    rt: Runtime,
    entry: ActiveWorkflow,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_ms: int | None,
    recorded: dict[int, StepRow] | None,
) -> Op[Any]:
    """One workflow run, sync or async: the body is the one effect, its outcome recorded."""
    tokens = _enter(rt, entry, info, deadline_ms, recorded)
    # Diagnostics on: the workflow's span is current while its body runs (None: off).
    spans = rt.op_tracer
    span = spans.start(info.name, "workflow", entry.workflow_id) if spans is not None else None
    failure: BaseException | None = None
    try:
        try:
            check_boundary(rt, entry)
            result = yield Call(info.func, args, kwargs)
        except BaseException as exc:
            failure = exc
            if info.is_async and isinstance(exc, asyncio.CancelledError) and rt.interrupting:
                exc = WorkflowInterrupted()
            _conclude_error(rt, entry, exc)
        else:
            _conclude_ok(rt, entry, info, result)
    finally:
        if spans is not None:
            spans.end(span, failure)
        _leave(tokens)
        rt.timeouts.remove(entry.workflow_id)
        rt.active.release(entry)
    return entry.outcome()


def _conclude_ok(rt: Runtime, entry: ActiveWorkflow, info: WorkflowInfo, result: Any) -> None:
    try:
        codec = entry.codec
        output = codec.encode(result, f"the output of workflow {info.name!r}")
    except Exception as exc:
        _conclude_error(rt, entry, exc)
        return
    try:
        if rt.sysdb.finish_workflow(entry.workflow_id, SUCCESS, output=output, error=None):
            # Recorded: from now on the row's output is final, so handles may take it here
            # (kept as native bytes only: that is what a handle reads without a format).
            if codec.format is None:
                rt.active.remember_success(entry.workflow_id, output)
            entry.finish(result=result)
        else:
            entry.cancel()  # cancelled (or timed out) while its last step ran
    except SystemDatabaseClosed:
        entry.finish(error=_shutdown_error(entry.workflow_id))


def _conclude_error(rt: Runtime, entry: ActiveWorkflow, exc: BaseException) -> None:
    if isinstance(exc, WorkflowInterrupted | SystemDatabaseClosed) or (
        rt.interrupting and isinstance(exc, Exception)
    ):
        # Shutdown: the workflow stays PENDING for recovery; nothing is recorded or logged
        # as an error, and nothing touches the database any more.
        entry.finish(error=_shutdown_error(entry.workflow_id))
        return
    if isinstance(exc, DBOSWorkflowCancelledError):
        entry.cancel()
        return
    if not isinstance(exc, Exception):
        entry.finish(error=exc)
        raise exc
    try:
        recorded = rt.sysdb.finish_workflow(
            entry.workflow_id, ERROR, output=None, error=entry.codec.encode_error(exc)
        )
    except SystemDatabaseClosed:
        entry.finish(error=_shutdown_error(entry.workflow_id))
        return
    if recorded:
        entry.finish(error=exc)
    else:
        entry.cancel()


def run_step(rt: Runtime, info: StepInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a sync step inside the current workflow, exactly once across replays."""
    ctx = current_workflow.get()
    if ctx is None or ctx.in_step:
        return info.func(*args, **kwargs)
    return drive(step(rt, ctx, info.name, Call(info.func, args, kwargs), info))


async def run_step_async(
    rt: Runtime, info: StepInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run an async step inside the current workflow, exactly once across replays."""
    ctx = current_workflow.get()
    if ctx is None or ctx.in_step:
        return await info.func(*args, **kwargs)
    call = (
        PreemptibleCall(ctx.entry, info.func, args, kwargs)
        if info.preemptible
        else Call(info.func, args, kwargs)
    )
    return await drive_async(step(rt, ctx, info.name, call, info))


def durable_sleep(rt: Runtime, seconds: float) -> None:
    """Sleep that survives a crash: the wake-up time is checkpointed, a recovered workflow
    sleeps only what is left. Cancel and shutdown cut it short."""
    ctx = current_workflow.get()
    if ctx is None:
        time.sleep(seconds)
        return
    drive(sleep(rt, ctx, seconds))


async def durable_sleep_async(rt: Runtime, seconds: float) -> None:
    """Async :func:`durable_sleep`: waits on the loop, holding no thread."""
    ctx = current_workflow.get()
    if ctx is None:
        await asyncio.sleep(seconds)
        return
    await drive_async(sleep(rt, ctx, seconds))


async def wait_async(entry: ActiveWorkflow) -> Any:
    """Await an entry's outcome on the running loop, holding no thread."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def fire() -> None:
        if not done.done():
            done.set_result(None)

    def fire_threadsafe() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(fire)

    entry.add_done_callback(fire_threadsafe)
    await done
    return entry.outcome()
