"""OpenTelemetry spans per workflow, step and transaction, with DBOS's attribute names.

Made only with diagnostics on (``Runtime.op_tracer`` is None otherwise, and the hot path
then pays one attribute read). DBOS's names: ``operationUUID`` (the workflow ID),
``operationType`` (``workflow``, ``step``, ``transaction``), ``applicationID``,
``applicationVersion``, ``executorID``, ``queueName``; with ``otel_attribute_format``
``semconv``, their ``dbos.*`` equivalents. The span of the running operation is the current
one while its body runs, so ``DBOS.span`` returns it and the app's own spans nest under it.
Telemetry never raises into a workflow: a failure to make or end a span is logged once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

logger = logging.getLogger("spindle.diagnostics")

#: DBOS's legacy attribute names -> the ``semconv`` ones (``otel_attribute_format``).
LEGACY_TO_SEMCONV = {
    "operationUUID": "dbos.operation.workflow_id",
    "operationType": "dbos.operation.type",
    "applicationID": "dbos.application.id",
    "applicationVersion": "dbos.application.version",
    "executorID": "dbos.executor.id",
    "queueName": "dbos.queue.name",
}


class OperationTracer:
    """Starts the span of one workflow, step or transaction, and makes it current."""

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        application_version: str,
        executor_id: str,
        attribute_format: str = "legacy",
        extra_attributes: Mapping[str, str] | None = None,
    ) -> None:
        self._tracer = tracer
        self._semconv = attribute_format == "semconv"
        self._common = {
            "applicationID": os.environ.get("DBOS__APPID"),
            "applicationVersion": application_version,
            "executorID": executor_id,
        }
        self._extra = dict(extra_attributes or {})
        self._failed_once = False

    def _name(self, key: str) -> str:
        return LEGACY_TO_SEMCONV.get(key, key) if self._semconv else key

    def start(
        self, name: str, operation_type: str, workflow_id: str, queue_name: str | None = None
    ) -> tuple[Span, object] | None:
        """Start a span as a child of the current one and make it current; returns what
        :meth:`end` takes (None if telemetry failed: the operation runs on regardless)."""
        try:
            span = self._tracer.start_span(name)
            attributes: dict[str, Any] = {
                "operationUUID": workflow_id,
                "operationType": operation_type,
                "queueName": queue_name,
                **self._common,
            }
            for key, value in attributes.items():
                if value is not None:
                    span.set_attribute(self._name(key), value)
            for key, value in self._extra.items():
                span.set_attribute(key, value)
            token = otel_context.attach(trace.set_span_in_context(span))
            return span, token
        except Exception:
            self._log_failure()
            return None

    def start_handler(self, name: str, attributes: Mapping[str, Any]) -> tuple[Span, object] | None:
        """The span of a web request handled by the app (``operationType`` ``handler``),
        current while it runs so the workflows it starts nest under it."""
        try:
            span = self._tracer.start_span(name)
            for key, value in {**attributes, "operationType": "handler", **self._common}.items():
                if value is not None:
                    span.set_attribute(self._name(key), value)
            token = otel_context.attach(trace.set_span_in_context(span))
            return span, token
        except Exception:
            self._log_failure()
            return None

    def end(self, started: tuple[Span, object] | None, error: BaseException | None) -> None:
        """Restore the previous current span and end this one (with its error, if any)."""
        if started is None:
            return
        span, token = started
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()
        except Exception:
            self._log_failure()

    def _log_failure(self) -> None:
        if not self._failed_once:
            self._failed_once = True
            logger.exception("spindle: an operation span failed (logged once; work goes on)")
