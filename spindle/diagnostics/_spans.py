"""Lifecycle events as OpenTelemetry spans, and the tracer provider they go to.

One span per lifecycle event, plus a ``spindle.shutdown`` span with one child per phase;
events during shutdown are children of the phase they happened in. Spans get explicit start
and end times from the events, so a span says when the thing happened, not when it was
exported.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, Span, Status, StatusCode

from ._errors import SpanExportConfigError
from ._events import LifecycleEvent
from ._kinds import EventType
from ._registry import ThreadRegistry
from ._stacks import format_stack
from ._timeline import ShutdownTimeline

logger = logging.getLogger("spindle.diagnostics")

TRACER_NAME = "spindle.diagnostics"

# Events that become a span of their own. thread.start and thread.status are left out on
# purpose: start is the spawn span's twin a microsecond later, and status notes can be
# frequent (a reconnect loop); both stay in the registry and the timeline.
_SPAN_EVENTS = {
    EventType.SPAWN,
    EventType.STOP_EVENT_REGISTER,
    EventType.STOP_EVENT_SET,
    EventType.EXIT,
    EventType.JOIN,
    EventType.DB_INTERRUPT,
    EventType.DB_CLOSE,
}

# Stacks captured for stuck threads wait here for the thread's join span; bounded so a
# process that captures and never joins cannot grow it.
_MAX_PENDING_STACKS = 256

_test_provider: trace.TracerProvider | None = None


def set_default_tracer_provider_for_tests(provider: trace.TracerProvider | None) -> None:
    """Make sessions created from now on use ``provider`` (None restores the normal choice).

    OpenTelemetry's global provider can be set once per process; tests need a fresh one each,
    so this override wins over the global. Sessions treat it as the app's own provider: they
    flush it but never shut it down.
    """
    global _test_provider
    _test_provider = provider


def _ns(wall: float) -> int:
    return int(wall * 1_000_000_000)


def _thread_attrs(event: LifecycleEvent) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if event.thread_ident is not None:
        attrs["thread.id"] = event.thread_ident
    if event.thread_name is not None:
        attrs["thread.name"] = event.thread_name
    if event.kind is not None:
        attrs["spindle.thread.kind"] = event.kind.value
    if event.group is not None:
        attrs["spindle.thread.group"] = event.group.value
    if event.record_id is not None:
        attrs["spindle.thread.record_id"] = event.record_id
    return attrs


def _event_attrs(event: LifecycleEvent) -> dict[str, Any]:
    a = event.attrs
    out: dict[str, Any] = {}
    t = event.type
    if t is EventType.SPAWN:
        if a.get("parent_id") is not None:
            out["spindle.thread.parent_id"] = a["parent_id"]
        if a.get("stop_id") is not None:
            out["spindle.stop_event.id"] = a["stop_id"]
    elif t in (EventType.STOP_EVENT_REGISTER, EventType.STOP_EVENT_SET):
        out["spindle.stop_event.id"] = a.get("stop_id", -1)
        out["spindle.stop_event.name"] = str(a.get("name", ""))
        group = a.get("group") or a.get("stop_group")
        if group is not None:
            out["spindle.thread.group"] = str(group)
    elif t is EventType.EXIT:
        out["spindle.thread.outcome"] = str(a.get("outcome", ""))
        if a.get("exception"):
            out["spindle.thread.exception"] = str(a["exception"])
    elif t is EventType.JOIN:
        out["spindle.join.outcome"] = str(a.get("outcome", ""))
        out["spindle.join.duration_s"] = float(a.get("duration") or 0.0)
        # An executor joined while it runs a workflow (a leaked one) names it.
        if a.get("workflow_id") is not None:
            out["spindle.workflow.id"] = str(a["workflow_id"])
            out["spindle.workflow.name"] = str(a.get("workflow_name", ""))
        if a.get("step_name") is not None:
            out["spindle.step.function_id"] = int(a.get("step_id") or 0)
            out["spindle.step.name"] = str(a["step_name"])
    elif t in (EventType.DB_CLOSE, EventType.DB_INTERRUPT):
        out["spindle.db.name"] = str(a.get("database", ""))
        alive = a.get("alive_threads")
        if alive is not None:
            out["spindle.db.alive_threads"] = [str(n) for n in alive]
    return out


class SpanEmitter:
    """A registry listener that turns lifecycle events into spans on ``tracer``."""

    def __init__(self, registry: ThreadRegistry, tracer: trace.Tracer) -> None:
        self._registry = registry
        self._tracer = tracer
        # Events arrive from every thread; the span state below is shared.
        self._lock = threading.Lock()
        self._shutdown_span: Span | None = None
        self._shutdown_id: str | None = None
        self._shutdown_end_ns: int | None = None
        self._phase_span: Span | None = None
        self._pending_stacks: OrderedDict[int, tuple[str, list[dict[str, Any]]]] = OrderedDict()

    def __call__(self, event: LifecycleEvent) -> None:
        """Turn one event into spans; called by the registry, which swallows errors."""
        with self._lock:
            self._handle(event)

    def _parent(self) -> Context | None:
        span = self._phase_span or (self._shutdown_span if self._shutdown_end_ns is None else None)
        return trace.set_span_in_context(span) if span is not None else None

    def _handle(self, event: LifecycleEvent) -> None:
        t = event.type
        at = _ns(event.wall_time)
        if t is EventType.SHUTDOWN_BEGIN:
            self._end_shutdown(None)
            self._shutdown_span = self._tracer.start_span(
                "spindle.shutdown",
                start_time=at,
                attributes={"spindle.shutdown.id": str(event.attrs.get("shutdown_id", ""))},
            )
            self._shutdown_id = str(event.attrs.get("shutdown_id", ""))
            self._shutdown_end_ns = None
        elif t is EventType.PHASE_START:
            if self._phase_span is not None:
                self._phase_span.end(end_time=at)
            name = str(event.attrs.get("phase", "?"))
            parent = (
                trace.set_span_in_context(self._shutdown_span)
                if self._shutdown_span is not None
                else None
            )
            self._phase_span = self._tracer.start_span(
                f"spindle.shutdown.{name}",
                context=parent,
                start_time=at,
                attributes={
                    "spindle.phase.name": name,
                    "spindle.phase.index": int(event.attrs.get("index", 0)),
                },
            )
        elif t is EventType.PHASE_END:
            if self._phase_span is not None:
                outcome = str(event.attrs.get("outcome", ""))
                self._phase_span.set_attribute("spindle.phase.outcome", outcome)
                if outcome in ("error", "timeout"):
                    self._phase_span.set_status(Status(StatusCode.ERROR, f"phase {outcome}"))
                self._phase_span.end(end_time=at)
                self._phase_span = None
        elif t is EventType.SHUTDOWN_END:
            if self._phase_span is not None:
                self._phase_span.end(end_time=at)
                self._phase_span = None
            # The span stays open until the timeline's violations are attached to it
            # (on_timeline); it ends at this instant whatever time that happens.
            self._shutdown_end_ns = at
        elif t is EventType.STACK_CAPTURED:
            record = self._registry.get(event.record_id) if event.record_id else None
            if record is not None and record.captured_stack:
                self._pending_stacks[record.record_id] = (
                    str(event.attrs.get("reason", "")),
                    list(record.captured_stack),
                )
                while len(self._pending_stacks) > _MAX_PENDING_STACKS:
                    self._pending_stacks.popitem(last=False)
        elif t in _SPAN_EVENTS:
            self._span_for(event, at)

    def _span_for(self, event: LifecycleEvent, at: int) -> None:
        attrs = _thread_attrs(event)
        attrs.update(_event_attrs(event))
        start = at
        if event.type is EventType.JOIN:
            start = at - _ns(float(event.attrs.get("duration") or 0.0))
        span = self._tracer.start_span(
            f"spindle.{event.type.value}",
            context=self._parent(),
            start_time=start,
            attributes=attrs,
        )
        if event.type is EventType.JOIN and event.record_id is not None:
            pending = self._pending_stacks.pop(event.record_id, None)
            if pending is not None:
                reason, frames = pending
                span.add_event(
                    "spindle.thread.stack",
                    attributes={
                        "spindle.stack.reason": reason,
                        "spindle.stack": format_stack(frames),
                    },
                    timestamp=at,
                )
            if event.attrs.get("outcome") == "timeout":
                span.set_status(Status(StatusCode.ERROR, "join timed out"))
        if event.type is EventType.EXIT and event.attrs.get("exception"):
            span.set_status(Status(StatusCode.ERROR, str(event.attrs["exception"])))
        span.end(end_time=at)

    def on_timeline(self, timeline: ShutdownTimeline) -> None:
        """Attach the timeline's violations to its shutdown span and end that span."""
        with self._lock:
            if self._shutdown_span is None or self._shutdown_id != timeline.shutdown_id:
                return
            self._end_shutdown(timeline)

    def close(self) -> None:
        """End whatever span is still open (a shutdown whose timeline never came)."""
        with self._lock:
            if self._phase_span is not None:
                self._phase_span.end()
                self._phase_span = None
            self._end_shutdown(None)

    def _end_shutdown(self, timeline: ShutdownTimeline | None) -> None:
        # Caller holds the lock.
        span = self._shutdown_span
        if span is None:
            return
        end = self._shutdown_end_ns
        if timeline is not None:
            for v in timeline.violations:
                stacks = "\n\n".join(
                    f"{name}:\n{format_stack(frames)}" for name, frames in v.stacks.items()
                )
                span.add_event(
                    "spindle.violation",
                    attributes={
                        "spindle.violation.rule": v.rule,
                        "spindle.violation.phase": v.phase or "",
                        "spindle.violation.threads": list(v.thread_names),
                        "spindle.violation.thread_ids": list(v.thread_ids),
                        "spindle.violation.message": v.message,
                        "spindle.violation.stacks": stacks,
                    },
                    timestamp=end,
                )
            span.set_attribute("spindle.shutdown.violations", len(timeline.violations))
            if timeline.violations:
                span.set_status(Status(StatusCode.ERROR, "shutdown ordering violations"))
        span.end(end_time=end)
        self._shutdown_span = None
        self._shutdown_id = None
        self._shutdown_end_ns = None


def _protocol() -> tuple[str, str]:
    for key in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = os.environ.get(key)
        if value:
            return value.strip().lower(), key
    return "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL"


def make_exporters(endpoints: Sequence[str]) -> list[SpanExporter]:
    """OTLP exporters for ``endpoints``, or from the ``OTEL_EXPORTER_OTLP_*`` variables.

    Empty when no endpoint is configured anywhere. Raises :class:`SpanExportConfigError` for
    a protocol that cannot be honoured.
    """
    env_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoints and not env_endpoint:
        return []
    protocol, key = _protocol()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise SpanExportConfigError(
                f"{key}=grpc needs the OTLP gRPC exporter: pip install 'spindle[grpc]' ({exc})"
            ) from exc
        if endpoints:
            return [GrpcExporter(endpoint=url) for url in endpoints]
        return [GrpcExporter()]
    if protocol != "http/protobuf":
        raise SpanExportConfigError(
            f"{key}={protocol!r} is not supported: use 'http/protobuf' or 'grpc'"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if endpoints:
        return [OTLPSpanExporter(endpoint=url) for url in endpoints]
    # The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT itself, appending /v1/traces
    # to the generic one as the specification says.
    return [OTLPSpanExporter()]


def _app_provider() -> trace.TracerProvider | None:
    if _test_provider is not None:
        return _test_provider
    provider = trace.get_tracer_provider()
    if isinstance(provider, ProxyTracerProvider | NoOpTracerProvider):
        return None
    return provider


class SpanExport:
    """A session's span export: the listener, and the provider and processors it made."""

    def __init__(
        self,
        registry: ThreadRegistry,
        *,
        service_name: str,
        endpoints: Sequence[str] = (),
    ) -> None:
        self._processors: list[BatchSpanProcessor] = []
        self._own_provider: SDKTracerProvider | None = None
        provider = _app_provider()
        self.uses_app_provider = provider is not None
        if provider is None:
            exporters = make_exporters(endpoints)
            if exporters:
                # shutdown_on_exit=False: the session shuts this provider down itself, last,
                # after the shutdown timeline's spans (an atexit of its own could run first).
                own = SDKTracerProvider(
                    resource=Resource.create({"service.name": service_name}),
                    shutdown_on_exit=False,
                )
                for exporter in exporters:
                    processor = BatchSpanProcessor(exporter)
                    own.add_span_processor(processor)
                    self._processors.append(processor)
                self._own_provider = own
                provider = own
            else:
                logger.info(
                    "spindle diagnostics: no tracer provider and no OTLP endpoint; "
                    "spans are not exported"
                )
        self.provider = provider
        self.tracer: trace.Tracer = (
            provider.get_tracer(TRACER_NAME) if provider is not None else trace.NoOpTracer()
        )
        self.emitter: SpanEmitter | None = None
        self._remove: Any = None
        if provider is not None:
            self.emitter = SpanEmitter(registry, self.tracer)
            self._remove = registry.add_listener(self.emitter)

    def on_timeline(self, timeline: ShutdownTimeline) -> None:
        """Attach a finished timeline's violations to its shutdown span."""
        if self.emitter is not None:
            self.emitter.on_timeline(timeline)

    def shutdown(self, timeout_sec: float) -> bool:
        """Stop listening, end open spans, flush, and shut down what this object made.

        Returns False when that did not finish within ``timeout_sec`` (logged). The app's own
        provider is flushed but never shut down.
        """
        if self._remove is not None:
            self._remove()
        if self.emitter is not None:
            self.emitter.close()
        if self.provider is None:
            return True
        # The SDK's force_flush ignores its timeout (opentelemetry-python#4568) and an export
        # to a collector that does not answer blocks for the exporter's own timeout: do the
        # work in a helper thread and wait only as long as we were told, reporting a thread
        # still alive instead of hiding it (its export ends at the exporter's timeout).
        result: list[bool] = []
        helper = threading.Thread(
            target=self._flush_and_close,
            args=(timeout_sec, result),
            name="otel-export-shutdown[spindle]",
            daemon=True,
        )
        helper.start()
        helper.join(timeout_sec)
        if helper.is_alive():
            logger.warning(
                "spindle diagnostics: span export still flushing after %.1fs; "
                "thread %s left to finish",
                timeout_sec,
                helper.name,
            )
            return False
        return bool(result and result[0])

    def _flush_and_close(self, timeout_sec: float, result: list[bool]) -> None:
        try:
            ok = True
            flush = getattr(self.provider, "force_flush", None)
            if flush is not None:
                ok = bool(flush(int(timeout_sec * 1000)))
            if self._own_provider is not None:
                self._own_provider.shutdown()
            result.append(ok)
        except Exception:
            logger.exception("spindle diagnostics: span export shutdown failed")
            result.append(False)
