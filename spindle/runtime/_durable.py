"""The durable-operation protocol, written once for every durable call a workflow makes.

Inside a workflow each durable call (a step, ``DBOS.sleep``, ``send``/``recv``,
``set_event``/``get_event``, a transaction, any later one) does the same:

1. take the next function id (:func:`begin`);
2. if the workflow is being replayed and that id is recorded, return (or raise) what was
   recorded, doing nothing else (:func:`replay`);
3. else stop at the boundary if the workflow was cancelled or the runtime is shutting down
   (:func:`check_boundary`);
4. act, and record the outcome under that id (:func:`record`, or a write that records its
   own row, settled by :func:`settle`). A closed system database means the runtime is
   shutting down: the workflow is interrupted (it stays PENDING for recovery), never failed.
   ``not-pending`` means it was cancelled meanwhile; ``conflict`` means another execution
   recorded the id first, and its outcome wins.

Sync and async callers share each operation: an operation is a generator that yields the
one thing that differs, an :class:`Effect` (call the user's function, wait on an event),
and :func:`drive` runs it on the calling thread while :func:`drive_async` awaits it on the
running loop. A new durable call is usually a few lines on top of :func:`call` /
:func:`call_async` (compute once, record the output) or :func:`write_once` (a write that
records its own checkpoint in its transaction). For example, a ``DBOS.now()`` that every
execution of a workflow answers with the time its first execution recorded::

    def now(rt: Runtime) -> float:  # recorded once per workflow: a replay returns the same
        return _durable.call(rt, "DBOS.now", rt.clock.now)

plus the one-line classmethod on the facade that calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._clock_wait import is_real, wait_on_clock
from ._context import WorkflowContext, current_workflow
from ._errors import (
    DBOSMaxStepRetriesExceeded,
    DBOSRuntimeShutdownError,
    DBOSWorkflowCancelledError,
    WorkflowInterrupted,
)
from ._rows import StepRow, now_ms
from ._serialization import Codecs, serialize
from ._sysdb import SystemDatabase
from ._sysdb_gate import SystemDatabaseClosed

if TYPE_CHECKING:
    from spindle.diagnostics import Clock

    from ._active import ActiveWorkflow
    from ._functions import StepInfo

T = TypeVar("T")

#: DBOS's "Running step" / "Replaying step" debug lines go to its logger namespace.
_step_log = logging.getLogger("dbos")


class Host(Protocol):
    """What the protocol reads of the runtime (structural, so this module imports no facade)."""

    @property
    def interrupting(self) -> bool: ...

    @property
    def sysdb(self) -> SystemDatabase: ...

    @property
    def clock(self) -> Clock: ...


# -- effects and their drivers ------------------------------------------------------------


class Effect:
    """What an operation asks its driver to do: the one part that differs sync/async."""

    __slots__ = ()

    def run(self) -> Any:
        """Do it on this thread (blocking)."""
        raise NotImplementedError

    def run_async(self) -> Awaitable[Any]:
        """Do it on the running loop (an awaitable, holding no thread)."""
        raise NotImplementedError


class Call(Effect):
    """Call the user's function: a plain call sync, a coroutine awaited async."""

    __slots__ = ("args", "func", "kwargs")

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def run(self) -> Any:
        """``func(*args, **kwargs)``."""
        return self.func(*self.args, **self.kwargs)

    def run_async(self) -> Awaitable[Any]:
        """The coroutine ``func(*args, **kwargs)``, for the driver to await."""
        return self.func(*self.args, **self.kwargs)  # type: ignore[no-any-return]


class PreemptibleCall(Call):
    """An async step's call that a cancel (or shutdown) of its workflow cuts short (DBOS's
    ``preemptible``): the coroutine runs as a task, cancelled when the workflow is woken for
    good; the step then ends as the workflow does, unrecorded."""

    __slots__ = ("entry",)

    def __init__(
        self,
        entry: ActiveWorkflow,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        super().__init__(func, args, kwargs)
        self.entry = entry

    async def _run(self) -> Any:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.func(*self.args, **self.kwargs))
        woken = loop.create_future()

        def set_woken() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(set_woken)

        remove = self.entry.add_wake_callback(wake)
        try:
            await asyncio.wait({task, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            remove()
        entry = self.entry
        if not task.done() and (entry.cancelled or entry.interrupted):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if entry.interrupted:
                raise WorkflowInterrupted()
            raise DBOSWorkflowCancelledError(f"workflow {entry.workflow_id!r} was cancelled")
        return await task

    def run_async(self) -> Awaitable[Any]:
        """The step's coroutine, raced against its workflow's cancel."""
        return self._run()


class Decide(Effect):
    """Ask a step's ``should_retry`` predicate about a failure (awaited when async)."""

    __slots__ = ("exc", "predicate")

    def __init__(self, predicate: Callable[[BaseException], Any], exc: BaseException) -> None:
        self.predicate = predicate
        self.exc = exc

    def run(self) -> bool:
        """The predicate's answer (a sync step's predicate is sync: checked at decoration)."""
        return bool(self.predicate(self.exc))

    async def run_async(self) -> bool:
        """The predicate's answer, awaited when the predicate is async."""
        answer = self.predicate(self.exc)
        if inspect.isawaitable(answer):
            answer = await answer
        return bool(answer)


class WaitWake(Effect):
    """Wait up to ``seconds`` on a workflow's wake event (cancel, shutdown); True if woken.

    ``seconds`` are the runtime clock's: an injected (fake) clock moves the wait.
    """

    __slots__ = ("clock", "entry", "seconds")

    def __init__(self, entry: ActiveWorkflow, seconds: float, clock: Clock | None = None) -> None:
        self.entry = entry
        self.seconds = seconds
        self.clock = clock

    def run(self) -> bool:
        """Block on the event."""
        clock = self.clock
        if is_real(clock):
            return self.entry.wake.wait(self.seconds)
        assert clock is not None
        entry = self.entry
        return wait_on_clock(clock, entry.wake.is_set, entry.add_wake_callback, self.seconds)

    def run_async(self) -> Awaitable[bool]:
        """Await the event on the running loop."""
        return wait_wake_async(self.entry, self.seconds)


class Waitable(Protocol):
    """Something to wait on either way (a notification waiter)."""

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout``; True if woken."""
        ...

    def wait_async(self, timeout: float) -> Awaitable[bool]:
        """Await up to ``timeout``; True if woken."""
        ...

    def wait_clock(self, clock: Clock, timeout: float) -> bool:
        """Block up to ``timeout`` seconds of ``clock`` (a test's fake clock); True if woken."""
        ...


class Wait(Effect):
    """Wait up to ``seconds`` (of ``clock``, when one is injected) on a :class:`Waitable`."""

    __slots__ = ("clock", "seconds", "waitable")

    def __init__(self, waitable: Waitable, seconds: float, clock: Clock | None = None) -> None:
        self.waitable = waitable
        self.seconds = seconds
        self.clock = clock

    def run(self) -> bool:
        """Block on it."""
        if is_real(self.clock):
            return self.waitable.wait(self.seconds)
        assert self.clock is not None
        return self.waitable.wait_clock(self.clock, self.seconds)

    def run_async(self) -> Awaitable[bool]:
        """Await it."""
        return self.waitable.wait_async(self.seconds)


#: A durable operation: yields effects, is sent their results, returns the call's value.
Op = Generator[Effect, Any, T]


def drive(op: Op[T]) -> T:
    """Run an operation on this thread, doing each effect it yields (blocking)."""
    try:
        effect = next(op)
        while True:
            try:
                # A call inline: it is every step's one effect, and a frame less is measurable.
                value = (
                    effect.func(*effect.args, **effect.kwargs)
                    if type(effect) is Call
                    else effect.run()
                )
            except BaseException as exc:
                failure = exc
            else:
                effect = op.send(value)
                continue
            # The operation sees the effect's exception where it yielded, as if it had made
            # the call itself. Thrown outside the except block, so what the operation raises
            # next is not chained to it (as when it made the call itself).
            try:
                effect = op.throw(failure)
            finally:
                del failure  # no frame <-> traceback cycle left behind
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        op.close()  # an exception outside an effect (KeyboardInterrupt) still cleans up


async def drive_async(op: Op[T]) -> T:
    """Run an operation on the running loop, awaiting each effect it yields."""
    try:
        effect = next(op)
        while True:
            try:
                value = await effect.run_async()
            except BaseException as exc:  # a task cancelled here is thrown in, as in drive
                failure = exc
            else:
                effect = op.send(value)
                continue
            try:
                effect = op.throw(failure)
            finally:
                del failure
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        op.close()


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


# -- the protocol ---------------------------------------------------------------------------


def check_boundary(rt: Host, entry: ActiveWorkflow) -> None:
    """At every durable boundary: stop here if the runtime is shutting down or we were
    cancelled."""
    if entry.interrupted or rt.interrupting:
        raise WorkflowInterrupted()
    if entry.cancelled:
        raise DBOSWorkflowCancelledError(f"workflow {entry.workflow_id!r} was cancelled")


def begin(rt: Host, ctx: WorkflowContext, ids: int = 1) -> tuple[int, StepRow | None]:
    """Take the operation's function ids (the first is its checkpoint): ``(fid, row)`` with
    the recorded row on a replay, else ``(fid, None)`` once the boundary check passed."""
    fid = ctx.next_id()
    while ids > 1:  # taken in every run, recorded or not, so later ids stay aligned
        ctx.next_id()
        ids -= 1
    recorded = ctx.recorded
    if recorded is not None:
        row = recorded.get(fid)
        if row is not None:
            return fid, row
    check_boundary(rt, ctx.entry)
    return fid, None


def replay(row: StepRow, codecs: Codecs) -> Any:
    """A recorded outcome again: its output, or its error raised (read in its format)."""
    if row.error is not None:
        raise codecs.decode_error(row.error, row.serialization)
    return codecs.decode(row.output, row.serialization)


def settle(rt: Host, ctx: WorkflowContext, fid: int, outcome: str) -> StepRow | None:
    """Act on the outcome of a write that recorded ``fid``; the other run's row on a
    conflict, None when this call's record stands."""
    if outcome == "not-pending":
        # Read after the write: a shutdown that began while it ran (and set the workflows'
        # rows aside) is an interruption, not a cancel.
        if rt.interrupting:
            raise WorkflowInterrupted()
        ctx.entry.cancel()
        raise DBOSWorkflowCancelledError(f"workflow {ctx.workflow_id!r} was cancelled")
    if outcome == "conflict":
        try:
            return rt.sysdb.step_outputs(ctx.workflow_id).get(fid)
        except SystemDatabaseClosed as exc:
            raise WorkflowInterrupted() from exc
    return None


def record(
    rt: Host,
    ctx: WorkflowContext,
    fid: int,
    name: str,
    *,
    output: bytes | None,
    error: bytes | None,
    child_workflow_id: str | None = None,
    started_at: int | None = None,
    serialization: str | None = None,
) -> StepRow | None:
    """Checkpoint one outcome (``serialization``: its format, None for native); returns the
    row recorded by another execution on a conflict."""
    try:
        outcome = rt.sysdb.record_step(
            ctx.workflow_id,
            fid,
            name,
            output=output,
            error=error,
            child_workflow_id=child_workflow_id,
            started_at=started_at,
            serialization=serialization,
        )
    except SystemDatabaseClosed as exc:
        raise WorkflowInterrupted() from exc
    return None if outcome == "recorded" else settle(rt, ctx, fid, outcome)


def write_once(rt: Host, ctx: WorkflowContext, write: Callable[[int], str]) -> bool:
    """A write that records its own checkpoint (``write(fid)``, one transaction), once.

    True when this call wrote; False when a replay (or another execution) already had.
    """
    fid, row = begin(rt, ctx)
    if row is not None:
        replay(row, rt.sysdb.codecs)
        return False
    try:
        outcome = write(fid)
    except SystemDatabaseClosed as exc:
        raise WorkflowInterrupted() from exc
    other = settle(rt, ctx, fid, outcome)
    if other is not None:
        replay(other, rt.sysdb.codecs)
        return False
    return True


def conclude(
    rt: Host,
    ctx: WorkflowContext,
    fid: int,
    name: str,
    result: Any,
    error: BaseException | None,
    child_workflow_id: str | None = None,
    started_at: int | None = None,
) -> Any:
    """Record a computed outcome and hand it back (the other execution's, on a conflict)."""
    codecs = rt.sysdb.codecs
    codec = codecs.app
    if error is not None:
        output, error_data = None, codec.encode_error(error)
    else:
        output, error_data = codec.encode(result, f"the output of step {name!r}"), None
    other = record(
        rt,
        ctx,
        fid,
        name,
        output=output,
        error=error_data,
        child_workflow_id=child_workflow_id,
        started_at=started_at,
        serialization=codec.format,
    )
    if other is not None:
        return replay(other, codecs)
    if error is not None:
        raise error
    return result


def deadline(rt: Host, ctx: WorkflowContext, fid: int, seconds: float) -> float:
    """The epoch time a durable wait of ``seconds`` ends, checkpointed under ``fid``: a
    recovered workflow waits only for what is left."""
    recorded = ctx.recorded
    if recorded is not None:
        row = recorded.get(fid)
        if row is not None:
            return float(replay(row, rt.sysdb.codecs))
    wake_at = rt.clock.now() + seconds
    other = record(rt, ctx, fid, "DBOS.sleep", output=serialize(wake_at, "sleep"), error=None)
    return float(replay(other, rt.sysdb.codecs)) if other is not None else wake_at


# -- operations -----------------------------------------------------------------------------


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


def step(
    rt: Host,
    ctx: WorkflowContext,
    name: str,
    call: Call,
    retries: StepInfo | None = None,
    child_workflow_id: str | None = None,
) -> Op[Any]:
    """Run ``call`` once across replays and record its outcome, retrying per ``retries``
    (``child_workflow_id``: the workflow whose result or status the call reads)."""
    fid, row = begin(rt, ctx)
    if row is not None:
        if _step_log.isEnabledFor(logging.DEBUG):
            _step_log.debug("Replaying step, id: %d, name: %s", fid, name)
        return replay(row, rt.sysdb.codecs)
    if _step_log.isEnabledFor(logging.DEBUG):
        _step_log.debug("Running step, id: %d, name: %s", fid, name)
    attempts: _Attempts | None = None  # made on the first failure: none on the hot path
    error: BaseException | None = None
    started_at = now_ms()
    ctx.in_step = True  # durable calls inside run plainly: this operation is the checkpoint
    record = ctx.record
    if record is not None:
        record.work = (ctx.workflow_id, ctx.name, fid, name)  # shown while the step runs
    if retries is not None and retries.retries_allowed:
        ctx.step_retry = (0, retries.max_attempts)
    # Diagnostics on: the step's span (a child of its workflow's) is current while it runs.
    spans = getattr(rt, "op_tracer", None)
    span = spans.start(name, "step", ctx.workflow_id) if spans is not None else None
    try:
        while True:
            try:
                result, error = (yield call), None
                break
            except Exception as exc:
                if retries is None:
                    result, error = None, exc
                    break
                if retries.should_retry is not None and retries.retries_allowed:
                    # As DBOS: a False answer re-raises this error at once, no more tries;
                    # a predicate that raises fails the step with its own error.
                    try:
                        retry = yield Decide(retries.should_retry, exc)
                    except Exception as predicate_error:
                        result, error = None, predicate_error
                        break
                    if not retry:
                        result, error = None, exc
                        break
                if attempts is None:
                    attempts = _Attempts(retries)
                error, delay = attempts.failed(exc)
                if error is not None:
                    result = None
                    break
                # Back off on the wake event: cancel or shutdown cut the wait short.
                if (yield WaitWake(ctx.entry, delay, rt.clock)):
                    check_boundary(rt, ctx.entry)
                ctx.step_retry = (len(attempts.errors), retries.max_attempts)
    finally:
        ctx.in_step = False
        if record is not None:
            record.work = (ctx.workflow_id, ctx.name, None, None)
        ctx.step_retry = None
        if spans is not None:
            spans.end(span, error)
    return conclude(rt, ctx, fid, name, result, error, child_workflow_id, started_at)


def sleep(rt: Host, ctx: WorkflowContext, seconds: float) -> Op[None]:
    """Sleep that survives a crash: the wake-up time is checkpointed, a recovered workflow
    sleeps only what is left. Cancel and shutdown cut it short."""
    fid, row = begin(rt, ctx)
    wake_at = (
        float(replay(row, rt.sysdb.codecs)) if row is not None else deadline(rt, ctx, fid, seconds)
    )
    remaining = wake_at - rt.clock.now()
    if remaining <= 0:
        return
    record = ctx.record
    if record is not None:
        record.work = (ctx.workflow_id, ctx.name, fid, "DBOS.sleep")
    try:
        if (yield WaitWake(ctx.entry, remaining, rt.clock)):
            check_boundary(rt, ctx.entry)
    finally:
        if record is not None:
            record.work = (ctx.workflow_id, ctx.name, None, None)


def calling_workflow() -> WorkflowContext | None:
    """The workflow whose durable call this is: None outside one and inside a step (the
    step is the checkpoint: what it calls runs plainly)."""
    ctx = current_workflow.get()
    return None if ctx is None or ctx.in_step else ctx


@contextlib.contextmanager
def shutdown_unrecorded() -> Iterator[None]:
    """In a workflow, the runtime shutting down while a read waits must not become that
    step's recorded error: it unwinds the workflow instead, which stays PENDING for recovery
    (``WorkflowInterrupted`` passes the step's ``except Exception``)."""
    try:
        yield
    except DBOSRuntimeShutdownError:
        if current_workflow.get() is None:
            raise
        raise WorkflowInterrupted() from None


def call(
    rt: Host,
    name: str,
    func: Callable[..., T],
    *args: Any,
    child_workflow_id: str | None = None,
) -> T:
    """``func(*args)`` exactly once per workflow: checkpointed as ``name`` under the next
    function id (a replay returns the recorded output); outside a workflow just called."""
    ctx = calling_workflow()
    if ctx is None:
        return func(*args)
    op = step(rt, ctx, name, Call(func, args, {}), child_workflow_id=child_workflow_id)
    return drive(op)  # type: ignore[no-any-return]


async def call_async(
    rt: Host,
    name: str,
    func: Callable[..., Awaitable[T]],
    *args: Any,
    child_workflow_id: str | None = None,
) -> T:
    """Async :func:`call`: ``await func(*args)`` exactly once per workflow."""
    ctx = calling_workflow()
    if ctx is None:
        return await func(*args)
    op = step(rt, ctx, name, Call(func, args, {}), child_workflow_id=child_workflow_id)
    return await drive_async(op)
