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
from ._context import (
    _UNSET,
    WorkflowContext,
    current_workflow,
    next_timeout,
    next_workflow_id,
    timeout_is_set,
)
from ._errors import (
    DBOSMaxStepRetriesExceeded,
    DBOSRuntimeShutdownError,
    DBOSWorkflowCancelledError,
    DBOSWorkflowConflictIDError,
    WorkflowInterrupted,
)
from ._functions import StepInfo, WorkflowInfo
from ._rows import CANCELLED, ERROR, SUCCESS, TERMINAL, StepRow
from ._serialization import (
    deserialize,
    deserialize_exception,
    serialize,
    serialize_exception,
)
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
    parent_workflow_id: str | None
    timeout_ms: int | None
    deadline_epoch_ms: int | None
    #: True when ``SetWorkflowTimeout`` gave it a timeout (not inherited from its parent).
    own_timeout: bool


def resolve_identity(rt: Runtime, workflow_id: str | None = None) -> Identity:
    """Name the next workflow: consumes ``SetWorkflowID`` and takes a child function id."""
    parent = current_workflow.get()
    explicit = next_workflow_id.get()
    if explicit is not None:
        next_workflow_id.set(None)  # SetWorkflowID names the next workflow only
    child_fid = parent.next_id() if parent is not None else None
    if explicit is not None:
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
    return Identity(
        wf_id, parent.workflow_id if parent is not None else None, timeout_ms, deadline_ms, own
    )


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
        return Start(entry, False)
    try:
        inputs = serialize((args, kwargs), f"the inputs of workflow {info.name!r}")
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
        )
    except BaseException:
        rt.active.release(entry)
        raise
    recorded: dict[int, StepRow] | None = None
    if existing is not None and if_new:
        rt.active.release(entry)
        return Start(entry, False)
    if existing is not None:
        if existing.name != info.name:
            rt.active.release(entry)
            raise DBOSWorkflowConflictIDError(
                f"workflow ID {wf_id!r} belongs to {existing.name!r}, not {info.name!r}"
            )
        if existing.status in TERMINAL:
            _publish_row(entry, existing.status, existing.output, existing.error)
            rt.active.release(entry)
            return Start(entry, False)
        # PENDING (recovery, or the same ID again after a crash): replay its history.
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
) -> Start:
    """Start a workflow whose row a queue worker just set PENDING: no insert, no read.

    ``run`` is None when the ID is already in flight in this process.
    """
    entry, created = rt.active.acquire(workflow_id, is_async=info.is_async)
    if not created:
        return Start(entry, False)
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


def _publish_row(
    entry: ActiveWorkflow, status: str, output: bytes | None, error: bytes | None
) -> None:
    if status == SUCCESS:
        entry.finish(result=deserialize(output))
    elif status == ERROR and error is not None:
        entry.finish(error=deserialize_exception(error))
    elif status == CANCELLED:
        entry.cancel()


def _enter(
    rt: Runtime,
    entry: ActiveWorkflow,
    info: WorkflowInfo,
    deadline_ms: int | None,
    recorded: dict[int, StepRow] | None,
) -> tuple[Any, Any, Any]:
    ctx = WorkflowContext(entry.workflow_id, info.name, entry, deadline_ms, recorded)
    # The body starts with a clean slate: a SetWorkflowID/Timeout around the *call* must not
    # leak into the children the body starts (they inherit the deadline instead).
    return (
        current_workflow.set(ctx),
        next_workflow_id.set(None),
        next_timeout.set(_UNSET),
    )


def _leave(tokens: tuple[Any, Any, Any]) -> None:
    current_workflow.reset(tokens[0])
    next_workflow_id.reset(tokens[1])
    next_timeout.reset(tokens[2])


def _run_workflow(
    rt: Runtime,
    entry: ActiveWorkflow,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_ms: int | None,
    recorded: dict[int, StepRow] | None,
) -> Any:
    tokens = _enter(rt, entry, info, deadline_ms, recorded)
    try:
        try:
            _check_boundary(rt, entry)
            result = info.func(*args, **kwargs)
        except BaseException as exc:
            _conclude_error(rt, entry, exc)
        else:
            _conclude_ok(rt, entry, info, result)
    finally:
        _leave(tokens)
        rt.timeouts.remove(entry.workflow_id)
        rt.active.release(entry)
    return entry.outcome()


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
    tokens = _enter(rt, entry, info, deadline_ms, recorded)
    try:
        try:
            _check_boundary(rt, entry)
            result = await info.func(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and rt.interrupting:
                exc = WorkflowInterrupted()
            _conclude_error(rt, entry, exc)
        else:
            _conclude_ok(rt, entry, info, result)
    finally:
        _leave(tokens)
        rt.timeouts.remove(entry.workflow_id)
        rt.active.release(entry)
    return entry.outcome()


def _conclude_ok(rt: Runtime, entry: ActiveWorkflow, info: WorkflowInfo, result: Any) -> None:
    try:
        output = serialize(result, f"the output of workflow {info.name!r}")
    except Exception as exc:
        _conclude_error(rt, entry, exc)
        return
    try:
        if rt.sysdb.finish_workflow(entry.workflow_id, SUCCESS, output=output, error=None):
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
            entry.workflow_id, ERROR, output=None, error=serialize_exception(exc)
        )
    except SystemDatabaseClosed:
        entry.finish(error=_shutdown_error(entry.workflow_id))
        return
    if recorded:
        entry.finish(error=exc)
    else:
        entry.cancel()


def _check_boundary(rt: Runtime, entry: ActiveWorkflow) -> None:
    """At every durable boundary: stop here if the runtime is shutting down or we were
    cancelled."""
    if entry.interrupted or rt.interrupting:
        raise WorkflowInterrupted()
    if entry.cancelled:
        raise DBOSWorkflowCancelledError(f"workflow {entry.workflow_id!r} was cancelled")


def _replay(row: StepRow) -> Any:
    if row.error is not None:
        raise deserialize_exception(row.error)
    return deserialize(row.output)


def _record(
    rt: Runtime,
    ctx: WorkflowContext,
    fid: int,
    name: str,
    *,
    output: bytes | None,
    error: bytes | None,
) -> StepRow | None:
    """Checkpoint one step; returns the row recorded by another execution on a conflict."""
    try:
        outcome = rt.sysdb.record_step(ctx.workflow_id, fid, name, output=output, error=error)
    except SystemDatabaseClosed as exc:
        raise WorkflowInterrupted() from exc
    if outcome == "not-pending":
        if rt.interrupting:
            raise WorkflowInterrupted()
        ctx.entry.cancel()
        raise DBOSWorkflowCancelledError(f"workflow {ctx.workflow_id!r} was cancelled")
    if outcome == "conflict":
        return rt.sysdb.step_outputs(ctx.workflow_id).get(fid)
    return None


class _Attempts:
    """A step's retry policy in motion: after each failure, give up or say how long to wait."""

    __slots__ = ("delays", "errors", "info")

    def __init__(self, info: StepInfo) -> None:
        self.info = info
        self.errors: list[BaseException] = []
        self.delays = (
            [info.interval_seconds * info.backoff_rate**i for i in range(info.max_attempts - 1)]
            if info.retries_allowed
            else []
        )

    def failed(self, exc: BaseException) -> tuple[BaseException | None, float]:
        """Record a failure: ``(final error, 0)`` to give up, or ``(None, delay)`` to retry."""
        self.errors.append(exc)
        if len(self.errors) > len(self.delays):
            if not self.delays:
                return exc, 0.0
            return DBOSMaxStepRetriesExceeded(
                self.info.name, self.info.max_attempts, self.errors
            ), 0.0
        return None, self.delays[len(self.errors) - 1]


def _step_start(rt: Runtime, ctx: WorkflowContext | None) -> tuple[int, tuple[Any] | None]:
    """Take the step's function id; a replayed step returns its recorded outcome."""
    assert ctx is not None
    fid = ctx.next_id()
    if ctx.recorded is not None and fid in ctx.recorded:
        return fid, (_replay(ctx.recorded[fid]),)
    _check_boundary(rt, ctx.entry)
    return fid, None


def run_step(rt: Runtime, info: StepInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a sync step inside the current workflow, exactly once across replays."""
    ctx = current_workflow.get()
    if ctx is None or ctx.in_step:
        return info.func(*args, **kwargs)
    fid, replayed = _step_start(rt, ctx)
    if replayed is not None:
        return replayed[0]
    attempts = _Attempts(info)
    ctx.in_step = True
    try:
        while True:
            try:
                result, error = info.func(*args, **kwargs), None
                break
            except Exception as exc:
                error, delay = attempts.failed(exc)
                if error is not None:
                    result = None
                    break
                # Back off on the wake event: cancel or shutdown cut the wait short.
                if ctx.entry.wake.wait(delay):
                    _check_boundary(rt, ctx.entry)
    finally:
        ctx.in_step = False
    return _conclude_step(rt, ctx, fid, info.name, result, error)


async def run_step_async(
    rt: Runtime, info: StepInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run an async step inside the current workflow, exactly once across replays."""
    ctx = current_workflow.get()
    if ctx is None or ctx.in_step:
        return await info.func(*args, **kwargs)
    fid, replayed = _step_start(rt, ctx)
    if replayed is not None:
        return replayed[0]
    attempts = _Attempts(info)
    ctx.in_step = True
    try:
        while True:
            try:
                result, error = await info.func(*args, **kwargs), None
                break
            except Exception as exc:
                error, delay = attempts.failed(exc)
                if error is not None:
                    result = None
                    break
                if await wait_wake_async(ctx.entry, delay):
                    _check_boundary(rt, ctx.entry)
    finally:
        ctx.in_step = False
    return _conclude_step(rt, ctx, fid, info.name, result, error)


def _conclude_step(
    rt: Runtime,
    ctx: WorkflowContext,
    fid: int,
    name: str,
    result: Any,
    error: BaseException | None,
) -> Any:
    if error is not None:
        other = _record(rt, ctx, fid, name, output=None, error=serialize_exception(error))
        if other is not None:
            return _replay(other)
        raise error
    output = serialize(result, f"the output of step {name!r}")
    other = _record(rt, ctx, fid, name, output=output, error=None)
    if other is not None:
        return _replay(other)
    return result


def durable_sleep(rt: Runtime, seconds: float) -> None:
    """Sleep that survives a crash: the wake-up time is checkpointed, a recovered workflow
    sleeps only what is left. Cancel and shutdown cut it short."""
    ctx = current_workflow.get()
    if ctx is None:
        time.sleep(seconds)
        return
    wake_at = _sleep_checkpoint(rt, ctx, seconds)
    remaining = wake_at - rt.clock.now()
    if remaining > 0 and ctx.entry.wake.wait(remaining):
        _check_boundary(rt, ctx.entry)


async def durable_sleep_async(rt: Runtime, seconds: float) -> None:
    """Async :func:`durable_sleep`: waits on the loop, holding no thread."""
    ctx = current_workflow.get()
    if ctx is None:
        await asyncio.sleep(seconds)
        return
    wake_at = _sleep_checkpoint(rt, ctx, seconds)
    remaining = wake_at - rt.clock.now()
    if remaining > 0 and await wait_wake_async(ctx.entry, remaining):
        _check_boundary(rt, ctx.entry)


def _sleep_checkpoint(rt: Runtime, ctx: WorkflowContext, seconds: float) -> float:
    fid = ctx.next_id()
    if ctx.recorded is not None and fid in ctx.recorded:
        return float(_replay(ctx.recorded[fid]))
    _check_boundary(rt, ctx.entry)
    wake_at = rt.clock.now() + seconds
    other = _record(rt, ctx, fid, "DBOS.sleep", output=serialize(wake_at, "sleep"), error=None)
    return float(_replay(other)) if other is not None else wake_at


async def wait_wake_async(entry: ActiveWorkflow, timeout: float) -> bool:
    """Wait up to ``timeout`` for the entry's wake event on the running loop; True if woken."""
    loop = asyncio.get_running_loop()
    woken = loop.create_future()

    def set_woken() -> None:
        if not woken.done():
            woken.set_result(None)

    def wake() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(set_woken)

    remove = entry.add_wake_callback(wake)
    try:
        await asyncio.wait_for(asyncio.shield(woken), timeout)
        return True
    except TimeoutError:
        return False
    finally:
        remove()


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
