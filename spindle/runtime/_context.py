"""Per-workflow context and the ``SetWorkflowID`` / ``SetWorkflowTimeout`` context managers."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar

if TYPE_CHECKING:
    from spindle.diagnostics import ThreadRecord

    from ._active import ActiveWorkflow
    from ._rows import StepRow


@dataclass(slots=True)
class WorkflowContext:
    """What a running workflow knows about itself."""

    workflow_id: str
    name: str
    entry: ActiveWorkflow
    deadline_epoch_ms: int | None
    # Recorded steps when the workflow runs again (recovery, same ID); None when it is new,
    # so a new workflow never reads the database to look for a checkpoint.
    recorded: dict[int, StepRow] | None = None
    next_function_id: int = 0
    in_step: bool = False
    step_attempts: dict[int, int] = field(default_factory=dict)
    # The registry record of the thread running this (sync) workflow, to show its current
    # step there; None for async workflows (many share the event loop's thread).
    record: ThreadRecord | None = None
    #: While a step with retries runs: (zero-based attempt, max attempts), for
    #: ``DBOS.step_status``; None for a step without retries.
    step_retry: tuple[int, int] | None = None

    def next_id(self) -> int:
        """The next function id: each step, child or durable wait takes one, in order."""
        self.next_function_id += 1
        return self.next_function_id


current_workflow: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar(
    "spindle_current_workflow", default=None
)

_UNSET: float = -1.0
next_workflow_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "spindle_next_workflow_id", default=None
)
# _UNSET: inherit; None: explicitly no timeout; a number: seconds.
next_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "spindle_next_timeout", default=_UNSET
)


def timeout_is_set(value: float | None) -> bool:
    """True when ``SetWorkflowTimeout`` is in force (including an explicit None)."""
    return value is None or value != _UNSET


T = TypeVar("T")


class ContextBlock(Generic[T]):
    """A ``with`` block that sets a context variable, and restores its value on exit."""

    def __init__(self, var: contextvars.ContextVar[T], value: T) -> None:
        self._var = var
        self._value = value
        self._token: contextvars.Token[T] | None = None

    def __enter__(self) -> Self:
        self._token = self._var.set(self._value)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        self._var.reset(self._token)


class SetWorkflowID(ContextBlock[str | None]):
    """Run the next workflow started in this block with this ID (idempotency key)."""

    def __init__(self, workflow_id: str) -> None:
        if not isinstance(workflow_id, str) or not workflow_id:
            raise ValueError("SetWorkflowID needs a non-empty string")
        self.workflow_id = workflow_id
        super().__init__(next_workflow_id, workflow_id)


class SetWorkflowTimeout(ContextBlock[float | None]):
    """Give workflows started in this block a deadline ``seconds`` from their start.

    The deadline propagates to child workflows; ``None`` starts them with no timeout.
    """

    def __init__(self, workflow_timeout_sec: float | None) -> None:
        if workflow_timeout_sec is not None and (
            isinstance(workflow_timeout_sec, bool)
            or not isinstance(workflow_timeout_sec, int | float)
            or workflow_timeout_sec <= 0
        ):
            raise ValueError("SetWorkflowTimeout needs a positive number of seconds or None")
        self.seconds = workflow_timeout_sec
        super().__init__(next_timeout, workflow_timeout_sec)
