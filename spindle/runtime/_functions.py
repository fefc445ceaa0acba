"""The registry of decorated workflows, steps and transactions, by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A registered workflow function."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    max_recovery_attempts: int | None


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

    def add_workflow(self, info: WorkflowInfo) -> None:
        """Register a workflow; a second function under one name is an error."""
        existing = self.workflows.get(info.name)
        if existing is not None and existing.func is not info.func:
            raise ValueError(
                f"two different workflow functions are named {info.name!r}; pass name=..."
            )
        self.workflows[info.name] = info

    def workflow(self, name: str) -> WorkflowInfo | None:
        """A workflow by name."""
        return self.workflows.get(name)


#: Decorators register here, so functions decorated at import time exist before DBOS().
GLOBAL_REGISTRY = FunctionRegistry()
