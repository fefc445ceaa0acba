"""DBOS's ``DBOSContextEnsure`` and ``PropagateOtelContext`` context managers.

``DBOSContextEnsure``: DBOS creates its per-call context object lazily, and this block makes
sure one exists for code that reads it. Spindle's context is contextvars (workflow ID,
timeout, authentication, attributes each have their own, with a default), so a context
always exists: the block keeps DBOS code importable and running, changes nothing, and
lets every exception through, as DBOS's does.

``PropagateOtelContext``: the W3C trace context (``traceparent``/``tracestate``, not baggage)
of the current OpenTelemetry context, or of the one given, is stored in the workflow
attributes (DBOS's key ``dbos.otelContext``) of every workflow started or enqueued in the
block, durably, so a tool reading the workflow finds the trace it belongs to. Like the
attributes, it is not inherited by child workflows.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, Self

from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._attributes import OTEL_CARRIER_ATTRIBUTE, SetWorkflowAttributes, for_new_workflow


class DBOSContextEnsure:
    """DBOS's "make sure a context exists" block: Spindle's always does (see the module)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        return False


def carrier_of(context: otel_context.Context | None = None) -> dict[str, str]:
    """The W3C trace-context headers of ``context`` (default: the current one); empty when
    it holds no valid span."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=context)
    return carrier


class PropagateOtelContext:
    """Store the caller's trace context with every workflow started or enqueued in this
    block (DBOS's ``dbos.otelContext`` attribute), keeping the block's other attributes."""

    def __init__(self, context: otel_context.Context | None = None) -> None:
        self.context = context
        self._block: SetWorkflowAttributes | None = None

    def __enter__(self) -> Self:
        carrier = carrier_of(self.context)
        if carrier:
            # Merged with attributes an enclosing SetWorkflowAttributes gives, not replacing
            # them; a block with no trace to propagate changes nothing.
            attributes: dict[str, Any] = dict(for_new_workflow() or {})
            attributes[OTEL_CARRIER_ATTRIBUTE] = carrier
            self._block = SetWorkflowAttributes(attributes)
            self._block.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._block is not None:
            self._block.__exit__(exc_type, exc, tb)
            self._block = None
