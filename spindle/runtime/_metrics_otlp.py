"""The ``/metrics`` families pushed over OTLP, when an OTLP metrics endpoint is configured.

The same families as ``/metrics`` (one source: :func:`._metrics.runtime_families`), as
OpenTelemetry observable instruments read when the reader collects. The reader is given an
infinite interval so the SDK starts no thread of its own; the runtime's supervised
``dbos-metrics-exporter`` thread collects every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (default
60 s). A last export runs when the shutdown's timeline is recorded, after every phase, so
the final joins, phase durations and violations leave the process even though the admin
server (and so ``/metrics``) stops in phase 5.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from spindle.diagnostics import (
    EventType,
    LifecycleEvent,
    ShutdownTimeline,
    StopEvent,
    ThreadGroup,
    ThreadKind,
    add_timeline_listener,
)
from spindle.diagnostics._metrics import COUNTER, GAUGE, JOIN_BUCKETS, Family

from ._metrics import runtime_families

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

#: Families read at most this often: every instrument's callback runs in one collection.
_FRESH_SEC = 1.0


def otlp_metrics_configured(environ: dict[str, str] | None = None) -> bool:
    """True when the standard variables name an OTLP endpoint for metrics."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def _interval_sec() -> float:
    raw = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")
    try:
        value = float(raw) / 1000.0
    except ValueError:
        value = 60.0
    return value if value > 0 else 60.0


class OtlpMetrics:
    """The families as OTel instruments on their own MeterProvider, exported to ``exporter``."""

    def __init__(
        self, rt: Runtime, exporter: MetricExporter, *, interval_sec: float | None = None
    ) -> None:
        self._rt = rt
        self.interval_sec = interval_sec if interval_sec is not None else _interval_sec()
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Family]] | None = None
        self._closed = False
        # Shutdowns of this app (every app's timelines reach a timeline listener).
        self._shutdown_ids: set[str] = set()
        self.reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            resource=Resource.create({"service.name": rt.config.name}),
            views=[
                View(
                    instrument_name="spindle_thread_join_seconds",
                    aggregation=ExplicitBucketHistogramAggregation(JOIN_BUCKETS),
                )
            ],
        )
        meter = self.provider.get_meter("spindle")
        for family in self._families().values():
            if family.type == GAUGE:
                meter.create_observable_gauge(
                    family.name, [self._observe(family.name)], description=family.help
                )
            elif family.type == COUNTER:
                # OTel names a counter without Prometheus's _total; exporters add it back.
                meter.create_observable_counter(
                    family.name.removesuffix("_total"),
                    [self._observe(family.name)],
                    description=family.help,
                )
        # No observable histogram in OpenTelemetry: joins are recorded as they happen
        # (a lifecycle event, one per thread, never per workflow).
        self._joins = meter.create_histogram(
            "spindle_thread_join_seconds",
            unit="s",
            description="How long each thread join took, by kind and outcome.",
        )
        self._remove_listener = rt.registry.add_listener(self._on_event)
        self._remove_timeline = add_timeline_listener(self._on_timeline)

    def _families(self) -> dict[str, Family]:
        now = time.monotonic()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < _FRESH_SEC:
                return self._cached[1]
        families = {f.name: f for f in runtime_families(self._rt)}
        with self._lock:
            self._cached = (now, families)
        return families

    def _observe(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            family = self._families().get(name)
            if family is None:
                return []
            return [
                Observation(s.value, dict(zip(family.label_names, s.labels, strict=True)))
                for s in family.samples
            ]

        return callback

    def _on_event(self, event: LifecycleEvent) -> None:
        if event.type is EventType.SHUTDOWN_BEGIN:
            self._shutdown_ids.add(str(event.attrs.get("shutdown_id")))
        elif event.type is EventType.JOIN and event.kind is not None:
            duration = event.attrs.get("duration")
            if isinstance(duration, int | float):
                attrs = {"kind": event.kind.value, "outcome": str(event.attrs.get("outcome"))}
                self._joins.record(float(duration), attrs)

    def _on_timeline(self, timeline: ShutdownTimeline) -> None:
        # After the last phase of this app's shutdown: the final export, then done.
        if timeline.shutdown_id in self._shutdown_ids:
            self.close()

    def export_now(self) -> None:
        """Collect every instrument and export (blocking, bounded by the exporter's timeout)."""
        try:
            self.reader.collect()
        except Exception:
            logger.exception("spindle: OTLP metrics export failed")

    def run(self, stop: StopEvent) -> None:
        """The exporter thread's body: export every interval until stopped."""
        while not stop.wait(self.interval_sec):
            self.export_now()

    def close(self) -> None:
        """The last export, then shut the provider down; idempotent, never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cached = None  # the final values, read now
        self.export_now()
        self._remove_listener()
        self._remove_timeline()
        try:
            self.provider.shutdown(timeout_millis=5_000)
        except Exception:
            logger.exception("spindle: OTLP metrics shutdown failed")


def start_otlp_metrics(rt: Runtime, exporter: MetricExporter | None = None) -> OtlpMetrics | None:
    """Start pushing metrics when an endpoint is configured (or ``exporter`` is given)."""
    if exporter is None:
        if not otlp_metrics_configured():
            return None
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter()
    try:
        bridge = OtlpMetrics(rt, exporter)
    except Exception:
        # Observability never stops an app from launching.
        logger.exception("spindle: OTLP metrics are off: could not set them up")
        return None
    rt.supervisor.spawn(
        ThreadKind.METRICS, "dbos-metrics-exporter", bridge.run, group=ThreadGroup.INTERNAL
    )
    return bridge
