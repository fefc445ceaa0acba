"""The registry of decorated workflows, steps and transactions, by name."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._serializer import WorkflowSerializationFormat

_dbos_logger = logging.getLogger("dbos")


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A registered workflow function."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    max_recovery_attempts: int | None
    #: DBOS's ``serialization_type``: the format of its inputs, output and error (None:
    #: the application's serializer).
    serialization_type: WorkflowSerializationFormat | None = None


@dataclass(frozen=True, slots=True)
class StepInfo:
    """A registered step with its retry policy."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    retries_allowed: bool
    max_attempts: int
    interval_seconds: float
    backoff_rate: float
    #: DBOS's ``should_retry``: called with each failure; False stops the retries.
    should_retry: Callable[[BaseException], Any] | None = None
    #: DBOS's ``preemptible`` (async steps): a cancel of the workflow cancels the step.
    preemptible: bool = False


@dataclass(frozen=True, slots=True)
class TransactionInfo:
    """A registered transaction on the application database."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    isolation_level: str | None


def function_name(func: Callable[..., Any]) -> str:
    """The name DBOS gives a function: its qualified name."""
    return getattr(func, "__qualname__", None) or repr(func)


def is_async(func: Callable[..., Any]) -> bool:
    """True for ``async def`` functions."""
    return inspect.iscoroutinefunction(func)


class FunctionRegistry:
    """Workflows by name, filled by the decorators (before or after ``DBOS(...)``)."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowInfo] = {}

    def add_workflow(self, info: WorkflowInfo, *, warn: bool = True) -> None:
        """Register a workflow; a second function under one name warns, as in DBOS, and
        replaces the first (recovery runs the latest one registered). ``warn=False`` for
        the temporary workflows of steps and transactions (their step's name warns)."""
        existing = self.workflows.get(info.name)
        if warn and existing is not None and existing.func is not info.func:
            _dbos_logger.warning(
                "Duplicate registration of function '%s'. A function named '%s' has already "
                "been registered with DBOS. All functions registered with DBOS must have "
                "unique names.",
                info.name,
                info.name,
            )
        self.workflows[info.name] = info

    def workflow(self, name: str) -> WorkflowInfo | None:
        """A workflow by name."""
        return self.workflows.get(name)


#: Decorators register here, so functions decorated at import time exist before DBOS().
GLOBAL_REGISTRY = FunctionRegistry()
