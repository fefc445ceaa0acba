"""The Runtime: every running part of one app, as public attributes.

It is a plain holder. The composition root (``_lifecycle.launch``) fills it, the shutdown
phases take it apart, and every part receives it (or the pieces it needs) as a parameter.
It imports only the parts it holds, never the code that uses it, so nothing that takes a
``Runtime`` can form an import cycle through it. Parts built above it (the queue manager,
the pollers) are held through the small protocols below for the same reason.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Protocol

from spindle.diagnostics import (
    Clock,
    DiagnosticsSession,
    RealClock,
    ShutdownTimeline,
    ThreadRegistry,
)

from ._active import ActiveWorkflows
from ._admin import AdminServer
from ._appdb import ApplicationDatabase
from ._config import Config
from ._errors import DBOSNotLaunchedError
from ._event_loop import BackgroundLoop
from ._executor import DBOSExecutor
from ._messaging_db import MessagingDatabase
from ._notifications import NotificationListener
from ._op_spans import OperationTracer
from ._otlp_logs import LogExport
from ._supervisor import Supervised, Supervisor
from ._sysdb import SystemDatabase
from ._timeouts import TimeoutEnforcer


class QueueService(Protocol):
    """What the rest of the runtime asks of the queue manager."""

    def wake(self, queue_name: str) -> None:
        """Let the queue's worker dequeue now rather than at its next poll."""

    def start(self) -> None:
        """Start the manager and one worker per declared queue."""

    def close(self) -> None:
        """Spawn no more workers (shutdown began)."""

    def worker_threads(self) -> dict[str, Supervised]:
        """The per-queue worker threads spawned so far, by queue name."""
        ...

    def retire(self, queue_name: str) -> None:
        """Stop the worker of a queue that is no longer declared."""


class PollerService(Protocol):
    """What the rest of the runtime asks of the pollers (cron, receivers, schedules)."""

    def start(self) -> None:
        """Start every registered poller's thread."""

    def close(self, timeout: float) -> None:
        """Close the start gate: no poller starts a workflow or a thread from here."""

    def schedules_changed(self) -> None:
        """Re-read the schedules table now (a change made by this process)."""

    def start_scheduled(self, poller: Any) -> None:
        """Start a ``@DBOS.scheduled`` registration made after launch."""


class ConductorService(Protocol):
    """What the rest of the runtime asks of the conductor client."""

    url: str

    def start(self) -> None:
        """Spawn the ``dbos-conductor`` thread."""


class Runtime:
    """The parts of one running app. Attributes set at launch exist only after it."""

    # Built by launch() (see _lifecycle), replaced by the next launch after a destroy.
    sysdb: SystemDatabase
    messaging_db: MessagingDatabase
    executor: DBOSExecutor
    loop: BackgroundLoop
    timeouts: TimeoutEnforcer
    listener: NotificationListener
    queues: QueueService

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.registry = ThreadRegistry(max_exited=config.diagnostics_max_exited_threads)
        self.supervisor = Supervisor(self.registry)
        # Serialises launch and destroy: either may come from any thread, atexit included.
        self.state_lock = threading.RLock()
        self.launched = False
        self.destroyed = False
        # Set in phase 8: from then a closed database means "interrupted", not "failed".
        self.interrupting = False
        # Set before phase 1: waiting handles and workflows stop waiting.
        self.stopping = threading.Event()
        self.diag: DiagnosticsSession | None = None
        self.last_timeline: ShutdownTimeline | None = None
        # Set when the running destroy() finished: concurrent callers wait on it. The ident
        # of the thread running it, which must not wait on itself (a signal handler).
        self.shutdown_done: threading.Event | None = None
        self.shutdown_thread: int | None = None
        self.fault_release: threading.Event | None = None
        self.appdb: ApplicationDatabase | None = None
        self.active = ActiveWorkflows()
        self.pollers: PollerService | None = None
        self.admin: AdminServer | None = None
        self.conductor: ConductorService | None = None
        #: Set once launch-time recovery dispatched its last batch (None: nothing to recover).
        self.recovery_done: threading.Event | None = None
        # The timeline of the shutdown under way (live: phases are appended as they run).
        self.shutdown_timeline: ShutdownTimeline | None = None
        # Tasks of async workflows started on the caller's loop: held so they are not
        # garbage-collected mid-run (asyncio keeps only weak references to tasks).
        self.background_tasks: set[asyncio.Task[Any]] = set()
        # DBOS.listen_queues (before launch): the only queues this process dequeues from.
        self.listening_queues: frozenset[str] | None = None
        # Spans per workflow/step/transaction (_op_spans), with diagnostics on; else None.
        self.op_tracer: OperationTracer | None = None
        # DBOS's OTLP log export of the ``dbos`` logger (_otlp_logs), when configured.
        self.log_export: LogExport | None = None

    @property
    def admin_url(self) -> str | None:
        """The admin server's base URL, when it runs."""
        return self.admin.url if self.admin is not None else None

    def require_launched(self) -> None:
        """Raise unless launched and not yet destroyed."""
        if not self.launched or self.destroyed:
            raise DBOSNotLaunchedError("DBOS.launch() was not called (or destroy() ran)")

    def schedules_changed(self) -> None:
        """Tell the dynamic scheduler that this process changed the schedules table."""
        if self.pollers is not None:
            self.pollers.schedules_changed()
