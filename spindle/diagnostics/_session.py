"""One app's diagnostics: keeps the latest shutdown timelines and owns span export."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from ._registry import ThreadRegistry
from ._timeline import ShutdownTimeline

logger = logging.getLogger("spindle.diagnostics")


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
        self._lock = threading.Lock()
        self._closed = False

    @property
    def timelines(self) -> list[ShutdownTimeline]:
        """The latest shutdown timelines, oldest first."""
        with self._lock:
            return list(self._timelines)

    def record_timeline(self, timeline: ShutdownTimeline) -> None:
        """Keep a finished timeline, log its violations and write it as JSON when configured."""
        with self._lock:
            self._timelines.append(timeline)
        for v in timeline.violations:
            logger.warning(
                "spindle shutdown ordering violation [%s] in phase %s: %s threads=%s",
                v.rule,
                v.phase,
                v.message,
                ", ".join(v.thread_names) or "-",
            )
        if self.report_path:
            try:
                path = Path(self.report_path)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(timeline.to_dict(), indent=1))
            except OSError:
                logger.exception("spindle: could not write the shutdown report")

    def shutdown(self, timeout_sec: float = 5.0) -> None:
        """Flush and stop span export; idempotent and never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
