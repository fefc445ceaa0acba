"""``DBOS.run_step``/``run_step_async`` (a function run as a step without decorating it) and
the checks DBOS 2.30 makes on step options, as a base class of the facade."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict, TypeVar

from . import _current
from ._context import current_workflow
from ._core import run_step, run_step_async
from ._durable import begin, record, replay
from ._errors import DBOSException
from ._functions import StepInfo, function_name
from ._serialization import serialize

R = TypeVar("R")


class StepOptions(TypedDict, total=False):
    """The options of ``DBOS.run_step`` (DBOS's ``StepOptions``; all optional)."""

    name: str | None
    retries_allowed: bool
    interval_seconds: float
    max_attempts: int
    backoff_rate: float
    should_retry: Callable[[BaseException], Any] | None
    preemptible: bool


def check_step_options(
    step_name: str, func: Callable[..., Any], should_retry: Any, preemptible: bool
) -> None:
    """Raise as DBOS does for options a step cannot honour."""
    sync = not inspect.iscoroutinefunction(func)
    if should_retry is not None and inspect.iscoroutinefunction(should_retry) and sync:
        raise DBOSException(
            f"Step {step_name} is sync but should_retry is async. "
            "Use an async step to pair with an async validator."
        )
    if preemptible and sync:
        raise DBOSException(
            f"Step {step_name} is sync but preemptible=True. "
            "Preemption is only supported for async steps."
        )


def _info(options: StepOptions | None, func: Callable[..., Any]) -> StepInfo:
    opts = options or {}
    unknown = sorted(set(opts) - set(StepOptions.__annotations__))
    if unknown:
        raise ValueError(f"unknown step option {unknown[0]!r}")
    name = opts.get("name") or function_name(func)
    max_attempts = opts.get("max_attempts", 3)
    interval = opts.get("interval_seconds", 1.0)
    backoff = opts.get("backoff_rate", 2.0)
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    if interval < 0 or backoff <= 0:
        raise ValueError("interval_seconds must be >= 0 and backoff_rate > 0")
    should_retry = opts.get("should_retry")
    check_step_options(name, func, should_retry, opts.get("preemptible", False))
    return StepInfo(
        name,
        func,
        inspect.iscoroutinefunction(func),
        opts.get("retries_allowed", False),
        max_attempts,
        interval,
        backoff,
        should_retry,
        opts.get("preemptible", False),
    )


class StepAPI:
    """The ``run_step`` classmethods of ``DBOS``."""

    @classmethod
    def run_step(
        cls,
        dbos_step_options: StepOptions | None,
        func: Callable[..., R],
        *args: Any,
        **kwargs: Any,
    ) -> R:
        """Run ``func`` as a checkpointed step of the current workflow (a plain call outside
        one), with ``@DBOS.step``'s options."""
        info = _info(dbos_step_options, func)
        if info.is_async:
            raise DBOSException(f"{info.name} is async: use DBOS.run_step_async")
        result: R = run_step(_current.get(), info, args, kwargs)
        return result

    @classmethod
    async def run_step_async(
        cls,
        dbos_step_options: StepOptions | None,
        func: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Async :meth:`run_step`: an async ``func`` is awaited (a sync one runs inline)."""
        info = _info(dbos_step_options, func)
        if not info.is_async:
            return run_step(_current.get(), info, args, kwargs)
        return await run_step_async(_current.get(), info, args, kwargs)

    @classmethod
    async def asyncio_wait(
        cls,
        fs: list[Awaitable[Any]],
        *,
        timeout: float | None = None,
        return_when: str = asyncio.ALL_COMPLETED,
    ) -> tuple[set[asyncio.Future[Any]], set[asyncio.Future[Any]]]:
        """``asyncio.wait`` whose outcome (which awaitables were done) is checkpointed in a
        workflow, so a recovered workflow sees the same split (as DBOS)."""
        tasks = [asyncio.ensure_future(f) for f in fs]
        ctx = current_workflow.get()
        if ctx is None or ctx.in_step:
            return await asyncio.wait(tasks, timeout=timeout, return_when=return_when)
        rt = _current.get()
        # The checkpoint's ID is taken before the awaitables start (their steps take theirs
        # when they first run, at the wait below), in every run alike. Not through
        # ``_durable.step``: that marks the workflow in a step, and the awaitables' own steps
        # would then run unrecorded.
        fid, row = begin(rt, ctx)
        if row is not None:
            picked = set(replay(row, rt.sysdb.codecs))
        else:
            done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=return_when)
            indices = [i for i, t in enumerate(tasks) if t in done]
            other = record(
                rt,
                ctx,
                fid,
                "DBOS.asyncio_wait",
                output=serialize(indices, "the outcome of DBOS.asyncio_wait"),
                error=None,
            )
            picked = set(indices if other is None else replay(other, rt.sysdb.codecs))
        done_set = {tasks[i] for i in picked}
        if done_set:
            await asyncio.wait(done_set)
        return done_set, {t for i, t in enumerate(tasks) if i not in picked}
