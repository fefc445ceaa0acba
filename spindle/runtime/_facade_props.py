"""Class-level properties of ``DBOS`` that DBOS Transact 2.30 exposes as class properties:
the ``dbos`` logger, the app's version and executor, the current step and span, the tracer.

A metaclass, so ``DBOS.logger`` works on the class itself, as in DBOS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry import trace

from . import _current
from ._context import current_workflow

#: DBOS's logger namespace: an app's logging config for ``dbos`` keeps applying.
dbos_logger = logging.getLogger("dbos")


@dataclass(frozen=True, slots=True)
class StepStatus:
    """The running step: its ID, and for a step with retries its zero-based attempt and
    the most attempts it makes (DBOS's ``StepStatus``)."""

    step_id: int
    current_attempt: int | None
    max_attempts: int | None


class DBOSClassProperties(type):
    """The class properties; ``DBOS``'s metaclass derives from this."""

    @property
    def logger(cls) -> logging.Logger:
        """The ``dbos`` logger (as DBOS's ``DBOS.logger``)."""
        return dbos_logger

    @property
    def application_version(cls) -> str:
        """This process's application version (``application_version`` config key)."""
        return _current.get().config.application_version

    @property
    def executor_id(cls) -> str:
        """This process's executor ID (``executor_id`` config key or ``DBOS__VMID``)."""
        return _current.get().config.executor_id

    @property
    def step_status(cls) -> StepStatus | None:
        """The status of the step running now, or None outside a step."""
        ctx = current_workflow.get()
        if ctx is None or not ctx.in_step:
            return None
        retry = ctx.step_retry
        if retry is None:
            return StepStatus(ctx.next_function_id, None, None)
        return StepStatus(ctx.next_function_id, retry[0], retry[1])

    @property
    def span(cls) -> trace.Span | None:
        """The OpenTelemetry span current in this context, or None when there is none."""
        span = trace.get_current_span()
        return span if span.get_span_context().is_valid else None

    @property
    def tracer(cls) -> trace.Tracer:
        """The tracer of the workflow and step spans when diagnostics export them; else a
        tracer named ``dbos`` from the app's global tracer provider."""
        rt = _current.peek()
        if rt is not None and rt.diag is not None and rt.diag.exporting:
            return rt.diag.tracer
        return trace.get_tracer("dbos")
