"""OTLP log export as DBOS offers it: with ``enable_otlp`` and ``otlp_logs_endpoints``, the
records of the ``dbos`` logger (``DBOS.logger``) also go to each endpoint over OTLP/HTTP.

Started at launch and shut down at the end of ``destroy()`` (flushing what is buffered, for
at most ``timeout``). Like the span exporter, the batching worker is the OpenTelemetry SDK's
own thread; shutting the provider down joins it. A failure to set it up is logged, never
raised: logs are telemetry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource

logger = logging.getLogger("spindle.diagnostics")


def _severity(levelno: int) -> SeverityNumber:
    for floor, number in (
        (logging.CRITICAL, SeverityNumber.FATAL),
        (logging.ERROR, SeverityNumber.ERROR),
        (logging.WARNING, SeverityNumber.WARN),
        (logging.INFO, SeverityNumber.INFO),
    ):
        if levelno >= floor:
            return number
    return SeverityNumber.DEBUG


class _Handler(logging.Handler):
    """A ``logging`` record as an OTLP log record, with the current span's trace context
    (so a workflow's log lines sit with its span)."""

    def __init__(self, provider: LoggerProvider, level: int) -> None:
        super().__init__(level)
        self._otel = provider.get_logger("dbos")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            span = trace.get_current_span().get_span_context()
            self._otel.emit(
                LogRecord(
                    timestamp=int(record.created * 1e9),
                    observed_timestamp=time.time_ns(),
                    trace_id=span.trace_id if span.is_valid else None,
                    span_id=span.span_id if span.is_valid else None,
                    trace_flags=span.trace_flags if span.is_valid else None,
                    severity_text=record.levelname,
                    severity_number=_severity(record.levelno),
                    body=record.getMessage(),
                    attributes={
                        "code.filepath": record.pathname,
                        "code.lineno": record.lineno,
                        "code.function": record.funcName,
                    },
                )
            )
        except Exception:
            self.handleError(record)


class LogExport:
    """The ``dbos`` logger's OTLP handler and the provider behind it."""

    def __init__(
        self,
        exporters: Sequence[LogRecordExporter],
        *,
        service_name: str,
        level: str,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = LoggerProvider(
            resource=Resource.create({"service.name": service_name, **(attributes or {})}),
            shutdown_on_exit=False,
        )
        for exporter in exporters:
            self.provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
        self.handler = _Handler(self.provider, logging.getLevelNamesMapping()[level])
        self._logger = logging.getLogger("dbos")
        self._logger.addHandler(self.handler)

    def shutdown(self, timeout_sec: float = 5.0) -> None:
        """Detach the handler, flush what is buffered and stop the exporter threads."""
        self._logger.removeHandler(self.handler)
        try:
            self.provider.force_flush(int(timeout_sec * 1000))
            self.provider.shutdown()
        except Exception:
            logger.exception("spindle: OTLP log export shutdown failed")


def start(settings: Mapping[str, Any], *, service_name: str, log_level: str) -> LogExport | None:
    """The log export the DBOS settings ask for, or None (off, or no endpoint)."""
    endpoints = settings.get("otlp_logs_endpoints") or []
    if not settings.get("enable_otlp") or not endpoints:
        return None
    try:
        return LogExport(
            [OTLPLogExporter(endpoint=url) for url in endpoints],
            service_name=service_name,
            level=(settings.get("otlp_log_level") or log_level).upper(),
            attributes=settings.get("otlp_attributes"),
        )
    except Exception:
        logger.exception("spindle: OTLP log export could not start; logs stay local")
        return None
