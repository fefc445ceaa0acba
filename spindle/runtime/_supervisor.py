"""The one door: every background thread of the runtime is created here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from spindle.diagnostics import (
    JoinOutcome,
    StopEvent,
    ThreadGroup,
    ThreadKind,
    ThreadRecord,
    ThreadRegistry,
    capture_stack,
    format_stack,
)

logger = logging.getLogger("spindle")

Target = Callable[[StopEvent], None]


@dataclass(frozen=True, slots=True)
class Supervised:
    """A thread made by the supervisor: the thread, its stop event and its registry record."""

    thread: threading.Thread
    stop: StopEvent
    record: ThreadRecord

    @property
    def name(self) -> str:
        """The thread's readable name."""
        return self.thread.name


class Supervisor:
    """Creates, registers, signals and joins the runtime's background threads."""

    def __init__(self, registry: ThreadRegistry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._threads: list[Supervised] = []

    def spawn(
        self,
        kind: ThreadKind,
        name: str,
        target: Target,
        *,
        group: ThreadGroup = ThreadGroup.INTERNAL,
        parent: ThreadRecord | None = None,
    ) -> Supervised:
        """Create the stop event, register it, create the daemon thread, register it, start it.

        ``target`` receives the stop event, waits on it with ``stop.wait(timeout)`` and returns
        when it is set. Its exceptions are caught, logged and recorded on the thread's record.
        """
        if group is ThreadGroup.EXECUTOR:
            raise ValueError("executor workers are made by the executor, not spawned")
        stop = self.registry.new_stop_event(name, group)
        holder: list[ThreadRecord] = []

        def body() -> None:
            # The record was registered before start(), so the body never runs unregistered.
            record = holder[0]
            self.registry.mark_started(record)
            error: BaseException | None = None
            try:
                target(stop)
            except BaseException as exc:
                error = exc
                logger.exception("spindle thread %s died", name)
            finally:
                self.registry.mark_exited(record, error)

        thread = threading.Thread(target=body, name=name, daemon=True)
        record = self.registry.register_thread(
            thread, kind=kind, group=group, parent=parent, stop=stop
        )
        holder.append(record)
        supervised = Supervised(thread, stop, record)
        with self._lock:
            self._threads.append(supervised)
        thread.start()
        return supervised

    def threads(self, group: ThreadGroup | None = None) -> list[Supervised]:
        """The supervised threads made so far (of one group, if given)."""
        with self._lock:
            items = list(self._threads)
        return [s for s in items if group is None or s.stop.group is group]

    def signal(
        self,
        group: ThreadGroup | None = None,
        *,
        kinds: frozenset[ThreadKind] | None = None,
        exclude: frozenset[ThreadKind] = frozenset(),
    ) -> int:
        """Set the stop events of the threads in ``group`` (and of ``kinds``, if given),
        except the ``exclude``d kinds, which have a later phase of their own."""
        count = 0
        for s in self.threads(group):
            if kinds is not None and s.record.kind not in kinds:
                continue
            if s.record.kind in exclude:
                continue
            if not s.stop.is_set():
                s.stop.set()
                count += 1
        return count

    def forget_exited(self) -> None:
        """Drop supervised threads that have exited and been joined (bounded memory)."""
        with self._lock:
            self._threads = [
                s for s in self._threads if s.thread.is_alive() or s.record.join_outcome is None
            ]

    def reap(self, supervised: Supervised, timeout: float) -> bool:
        """Join one thread and record the outcome; True when it exited."""
        return join_and_record(self.registry, supervised.thread, supervised.record, timeout)


#: How often a join still waiting logs what it waits on.
PROGRESS_EVERY_SEC = 3.0


def join_progress(
    registry: ThreadRegistry, record: ThreadRecord, waited: float, timeout: float
) -> str:
    """``waiting on dbos-executor-1 (workflow stuck_wf 4f3…, step slow_call) 3.0 s of 10 s``."""
    info = registry.info(record)
    what = ""
    if info.workflow_id is not None:
        what = f"workflow {info.workflow_name} {info.workflow_id[:8]}…"
        if info.step_name is not None:
            what += f", step {info.step_name}"
        what = f" ({what})"
    return f"waiting on {record.name}{what} {waited:.1f} s of {timeout:g} s"


def join_and_record(
    registry: ThreadRegistry,
    thread: threading.Thread,
    record: ThreadRecord,
    timeout: float,
) -> bool:
    """Join ``thread`` for at most ``timeout`` seconds and record the outcome on its record.

    A thread still alive is logged as a warning with its stack: it is never hidden.
    """
    if thread is threading.current_thread():
        # Joining yourself deadlocks; the caller is this thread, so it will exit after us.
        registry.mark_joined(record, JoinOutcome.JOINED, 0.0)
        return True
    start = time.monotonic()
    registry.set_joining(record, timeout)
    try:
        # In slices, so a long join says in the log what it waits on while it waits.
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                break
            thread.join(min(left, PROGRESS_EVERY_SEC))
            if not thread.is_alive():
                break
            waited = time.monotonic() - start
            if waited < timeout:
                logger.warning("spindle: %s", join_progress(registry, record, waited, timeout))
    finally:
        registry.set_joining(None)
    duration = time.monotonic() - start
    if thread.is_alive():
        frames = capture_stack(thread.ident) if thread.ident is not None else None
        if frames:
            registry.attach_stack(record, frames, "join-timeout")
        registry.mark_joined(record, JoinOutcome.TIMEOUT, duration)
        work = registry.info(record).work_text()
        logger.warning(
            "spindle: thread %s (%s%s) still alive after a %.1fs join timeout:\n%s",
            thread.name,
            record.kind.value,
            f", {work}" if work else "",
            timeout,
            format_stack(frames) if frames else "  (no stack)",
        )
        return False
    if record.alive:
        # Threads we did not wrap (executor workers) report their exit through the join.
        registry.mark_exited(record, None)
    registry.mark_joined(record, JoinOutcome.JOINED, duration)
    return True


def start_pool_worker(
    name: str, target: Callable[..., object], args: tuple[object, ...]
) -> threading.Thread:
    """Start an executor pool's worker: a daemon thread, as every runtime thread.

    The executor registers it itself (its initializer); it has no stop event of its own: it
    stops when the pool's queue hands it ``None``. Daemon so that a worker stuck in a user's
    step, which ``destroy()`` already reported as leaked, never holds the interpreter's exit.
    """
    thread = threading.Thread(name=name, target=target, args=args, daemon=True)
    thread.start()
    return thread


def start_helper(name: str, target: Callable[..., object], args: tuple[object, ...]) -> None:
    """Start a short-lived daemon helper that is no part of the runtime's thread set (the
    SIGTERM shutdown runner: it runs ``destroy()``, so the shutdown must not join it)."""
    threading.Thread(name=name, target=target, args=args, daemon=True).start()
