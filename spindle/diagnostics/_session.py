"""One app's diagnostics: keeps the latest shutdown timelines and owns span export."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry import trace

from ._lint import Lint, lint
from ._recorder import ShutdownRecorder
from ._registry import ThreadRegistry
from ._spans import SpanExport
from ._timeline import ShutdownTimeline

logger = logging.getLogger("spindle.diagnostics")

TimelineListener = Callable[[ShutdownTimeline], None]

# Process-wide observers of every recorded timeline, whatever app recorded it: how the
# ``spindle_no_shutdown_violations`` fixture sees the timelines of apps it never met.
_timeline_listeners: list[TimelineListener] = []
_timeline_listeners_lock = threading.Lock()


def add_timeline_listener(listener: TimelineListener) -> Callable[[], None]:
    """Call ``listener`` with every timeline any session records; returns its remover."""
    with _timeline_listeners_lock:
        _timeline_listeners.append(listener)

    def remove() -> None:
        with _timeline_listeners_lock:
            if listener in _timeline_listeners:
                _timeline_listeners.remove(listener)

    return remove


class DiagnosticsSession:
    """What the runtime hands to diagnostics: its registry, its timelines, and its shutdown."""

    def __init__(
        self,
        registry: ThreadRegistry,
        *,
        service_name: str,
        enabled: bool,
        otlp_traces_endpoints: Sequence[str] = (),
        report_path: str | None = None,
        stuck_grace_sec: float = 5.0,
        max_timelines: int = 10,
    ) -> None:
        self.registry = registry
        self.service_name = service_name
        self.enabled = enabled
        self.otlp_traces_endpoints = tuple(otlp_traces_endpoints)
        self.report_path = report_path
        self.stuck_grace_sec = stuck_grace_sec
        self._timelines: deque[ShutdownTimeline] = deque(maxlen=max_timelines)
        # The shutdown being recorded now, shown live until record_timeline() keeps it.
        self._recording: ShutdownRecorder | None = None
        self._lock = threading.Lock()
        self._closed = False
        # Disabled means nothing at all: no provider, no exporter thread, no listener.
        self._spans: SpanExport | None = (
            SpanExport(registry, service_name=service_name, endpoints=self.otlp_traces_endpoints)
            if enabled
            else None
        )

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer spans go to (OpenTelemetry's no-op tracer when disabled)."""
        return self._spans.tracer if self._spans is not None else trace.NoOpTracer()

    @property
    def exporting(self) -> bool:
        """True when lifecycle events are being turned into spans."""
        return self._spans is not None and self._spans.emitter is not None

    @property
    def timelines(self) -> list[ShutdownTimeline]:
        """The latest shutdown timelines, oldest first; a shutdown still running is last,
        as a live copy (``ended_mono`` None, ``current_phase`` and ``progress`` set)."""
        with self._lock:
            kept = list(self._timelines)
            recording = self._recording
        if recording is not None:
            try:
                kept.append(recording.live())
            except Exception:  # observability never breaks the page that shows it
                logger.exception("spindle: could not read the shutdown in progress")
        return kept

    def recording(self, recorder: ShutdownRecorder) -> None:
        """Show ``recorder``'s shutdown live until :meth:`record_timeline` keeps it."""
        with self._lock:
            self._recording = recorder

    def lint(self, *, now: float | None = None) -> list[Lint]:
        """:func:`spindle.diagnostics.lint` over this session's registry and grace period."""
        return lint(self.registry, grace_sec=self.stuck_grace_sec, now=now)

    def record_timeline(self, timeline: ShutdownTimeline) -> None:
        """Keep a finished timeline, log its violations and write it as JSON when configured.

        Its violations go onto its ``spindle.shutdown`` span, and every process-wide
        timeline listener sees it. Never raises.
        """
        with self._lock:
            self._timelines.append(timeline)
            self._recording = None
        for v in timeline.violations:
            logger.warning(
                "spindle shutdown ordering violation [%s] in phase %s: %s threads=%s",
                v.rule,
                v.phase,
                v.message,
                ", ".join(v.thread_names) or "-",
            )
        if self._spans is not None:
            try:
                self._spans.on_timeline(timeline)
            except Exception:
                logger.exception("spindle: could not attach the timeline to its span")
        with _timeline_listeners_lock:
            listeners = list(_timeline_listeners)
        for listener in listeners:
            try:
                listener(timeline)
            except Exception:
                logger.exception("spindle: timeline listener %r failed", listener)
        self.rewrite_report(timeline)

    def rewrite_report(self, timeline: ShutdownTimeline) -> None:
        """Write ``timeline`` as the JSON report when configured (again, once it learnt
        more: the time to process exit). Never raises."""
        if self.report_path:
            try:
                path = Path(self.report_path)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(timeline.to_dict(), indent=1))
            except OSError:
                logger.exception("spindle: could not write the shutdown report")

    def shutdown(self, timeout_sec: float = 5.0) -> bool:
        """Flush and stop span export, last; idempotent, honours the timeout, never raises.

        Returns False when the export did not finish in time (it is logged).
        """
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        if self._spans is None:
            return True
        try:
            return self._spans.shutdown(timeout_sec)
        except Exception:
            logger.exception("spindle: span export shutdown failed")
            return False
