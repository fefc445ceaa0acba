"""The vocabulary of the registry: thread kinds, stop groups, states and event types."""

from __future__ import annotations

from enum import StrEnum


class ThreadKind(StrEnum):
    """What a thread is for: the eight kinds of the design, the admin server, and foreign."""

    TIMEOUT = "timeout"
    EXECUTOR = "executor"
    NOTIFICATION_LISTENER = "notification_listener"
    QUEUE = "queue"
    POLLER = "poller"
    SCHEDULER = "scheduler"
    EVENT_LOOP = "event_loop"
    CONDUCTOR = "conductor"
    # Not one of the design's eight, but the admin server runs in a supervised thread too and
    # hiding it under another kind would lie about what the thread does.
    ADMIN_SERVER = "admin_server"
    # The OTLP metrics exporter (only when an OTLP metrics endpoint is configured).
    METRICS = "metrics"
    # A thread the runtime did not create, found through threading.enumerate().
    FOREIGN = "foreign"


class ThreadGroup(StrEnum):
    """Which shutdown step stops a thread: pollers first, then internal, executor last."""

    POLLER = "poller"
    INTERNAL = "internal"
    # Executor workers have no stop event: executor shutdown (phase 7) stops them.
    EXECUTOR = "executor"


class ThreadState(StrEnum):
    """Where a thread is in its life, as the registry and the dashboard show it."""

    CREATED = "created"
    RUNNING = "running"
    WAITING = "waiting"
    # A pool thread waiting for work (an executor worker between workflows): alive, but
    # neither running nor blocked inside work, so it is counted apart from both.
    IDLE = "idle"
    STOPPING = "stopping"
    EXITED_OK = "exited-ok"
    EXITED_ERROR = "exited-error"
    LEAKED = "join-timeout"

    @property
    def alive(self) -> bool:
        """True while the thread has not exited."""
        return self not in (ThreadState.EXITED_OK, ThreadState.EXITED_ERROR)


class EventType(StrEnum):
    """A lifecycle event; each becomes one span named ``spindle.<value>``."""

    SPAWN = "thread.spawn"
    START = "thread.start"
    STOP_EVENT_REGISTER = "stop_event.register"
    STOP_EVENT_SET = "stop_event.set"
    EXIT = "thread.exit"
    JOIN = "thread.join"
    STATUS = "thread.status"
    STACK_CAPTURED = "thread.stack_captured"
    DB_INTERRUPT = "db.interrupt"
    DB_CLOSE = "db.close"
    SHUTDOWN_BEGIN = "shutdown.begin"
    # A step before phase 1 (closing the poller gate, the queues): on the timeline, not a phase.
    PREPARE_START = "shutdown.prepare.start"
    PREPARE_END = "shutdown.prepare.end"
    PHASE_START = "shutdown.phase.start"
    PHASE_END = "shutdown.phase.end"
    SHUTDOWN_END = "shutdown.end"


class JoinOutcome(StrEnum):
    """How a join ended."""

    JOINED = "joined"
    TIMEOUT = "timeout"
