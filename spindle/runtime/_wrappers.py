"""The functions the decorators return: each finds the current Runtime when it is called.

Kept apart from the facade so ``DBOS`` stays a list of names that delegate; the wrappers
are the hot path of every workflow and step call, so they do no more than look up the
runtime and hand over.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from . import _current, _durable
from ._classes import Binding, attach, decoding
from ._context import current_workflow
from ._core import Start, prepare_workflow, run_step, run_step_async, wait_async
from ._errors import DBOSException
from ._functions import GLOBAL_REGISTRY, StepInfo, TransactionInfo, WorkflowInfo
from ._handles import WorkflowHandle
from ._queue import check_no_enqueue_options
from ._roles import restoring
from ._roles import stored as stored_auth
from ._runtime import Runtime
from ._transactions import run_transaction

F = TypeVar("F", bound=Callable[..., Any])

#: DBOS's prefix of the temporary workflow that runs a step or transaction on its own.
TEMP_PREFIX = "<temp>."


def workflow_wrapper(info: WorkflowInfo, func: F) -> F:
    """Calling the workflow directly runs it in the caller's thread (or awaits it)."""
    binding = Binding(func)  # a method's first argument is stored by name (_classes)
    if info.is_async:

        async def run_or_wait_async(start: Start) -> Any:
            if start.run is not None:
                return await cast(Callable[[], Coroutine[Any, Any, Any]], start.run)()
            return await wait_async(start.entry)

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = _current.get()
            check_no_enqueue_options()
            start = prepare_workflow(rt, info, binding.encode(args), stored_auth(kwargs))
            if _durable.calling_workflow() is None:
                return await run_or_wait_async(start)
            # A child called directly: its outcome is the parent's DBOS.getResult step.
            return await _durable.call_async(
                rt,
                "DBOS.getResult",
                run_or_wait_async,
                start,
                child_workflow_id=start.entry.workflow_id,
            )

        wrapper: Callable[..., Any] = async_wrapper
    else:

        def run_or_wait(rt: Runtime, start: Start) -> Any:
            # Called directly: run in the caller's thread.
            if start.run is not None and start.entry.claim():
                return start.run()
            with _durable.shutdown_unrecorded():
                return WorkflowHandle[Any](rt, start.entry.workflow_id, start.entry).get_result()

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = _current.get()
            check_no_enqueue_options()
            start = prepare_workflow(rt, info, binding.encode(args), stored_auth(kwargs))
            if _durable.calling_workflow() is None:
                return run_or_wait(rt, start)
            # A child called directly: its outcome is the parent's DBOS.getResult step.
            return _durable.call(
                rt,
                "DBOS.getResult",
                run_or_wait,
                rt,
                start,
                child_workflow_id=start.entry.workflow_id,
            )

        wrapper = sync_wrapper
    wrapper.__spindle_workflow__ = info  # type: ignore[attr-defined]
    wrapper.__spindle_binding__ = binding  # type: ignore[attr-defined]
    return cast(F, wrapper)


def step_wrapper(info: StepInfo, func: F) -> F:
    """Outside a workflow a step is a plain call; inside, a checkpointed one.

    As in DBOS, a step also has a temporary workflow ``<temp>.<name>`` that runs it as its
    one step: what ``start_workflow``, a queue or ``@DBOS.scheduled`` run when given a step.
    """
    if info.is_async:

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = _current.peek()
            if rt is None or current_workflow.get() is None:
                return await func(*args, **kwargs)
            return await run_step_async(rt, info, args, kwargs)

        async def temporary_async(*args: Any, **kwargs: Any) -> Any:
            return await run_step_async(_current.get(), info, args, kwargs)

        attach(async_wrapper, func)
        _temporary_workflow(info.name, temporary_async, async_wrapper, is_async=True)
        return cast(F, async_wrapper)

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        rt = _current.peek()
        if rt is None or current_workflow.get() is None:
            return func(*args, **kwargs)
        return run_step(rt, info, args, kwargs)

    def temporary(*args: Any, **kwargs: Any) -> Any:
        return run_step(_current.get(), info, args, kwargs)

    attach(sync_wrapper, func)
    _temporary_workflow(info.name, temporary, sync_wrapper, is_async=False)
    return cast(F, sync_wrapper)


def _temporary_workflow(
    name: str, body: Callable[..., Any], target: Callable[..., Any], *, is_async: bool
) -> Callable[..., Any]:
    """Register ``<temp>.<name>`` running ``body`` and mark ``target`` (a step's or a
    transaction's wrapper) as startable through it; returns the workflow's own wrapper."""
    stored_body = restoring(decoding(body, is_async=is_async), is_async=is_async)
    temp_info = WorkflowInfo(TEMP_PREFIX + name, stored_body, is_async, None)
    GLOBAL_REGISTRY.add_workflow(temp_info, warn=False)
    target.__spindle_workflow__ = temp_info  # type: ignore[attr-defined]
    return workflow_wrapper(temp_info, body)


def transaction_wrapper(info: TransactionInfo, func: F) -> F:
    """A transaction runs in the application database, exactly once within a workflow.

    Called outside a workflow it runs, as in DBOS, in a temporary workflow named
    ``<temp>.<name>``: recorded, listed and recovered like any workflow, so the transaction
    still commits exactly once with its checkpoint.
    """
    if info.is_async:
        raise DBOSException(
            f"Function {info.name} is a coroutine function, but DBOS.transaction does not "
            "support coroutine functions"
        )

    def temporary(*args: Any, **kwargs: Any) -> Any:
        return run_transaction(_current.get(), info, args, kwargs)

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_workflow.get() is None:
            return run_temporary(*binding.encode(args), **kwargs)
        return run_transaction(_current.get(), info, args, kwargs)

    binding = Binding(func)
    sync_wrapper.__spindle_binding__ = binding  # type: ignore[attr-defined]
    run_temporary = _temporary_workflow(info.name, temporary, sync_wrapper, is_async=False)
    return cast(F, sync_wrapper)
