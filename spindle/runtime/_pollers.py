"""Pollers: the threads that start workflows from outside (cron ticks, message sources).

This module holds what every poller shares: the registry the decorators fill, the gate that
shutdown closes, the exactly-once start and the message-source protocol. ``_poller_set.py``
starts them all at ``launch()``; the cron loop lives in ``_cron.py``, the schedules table in
``_schedules.py`` and message sources in ``_receivers.py``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from spindle.diagnostics import StopEvent

from ._core import prepare_workflow
from ._functions import WorkflowInfo
from ._runtime import Runtime
from ._workflows import dispatch

logger = logging.getLogger("spindle")


@dataclass(frozen=True, slots=True)
class Event:
    """One message from a source: ``key`` is unique within the source (e.g. Kafka's
    topic, partition and offset) and makes the workflow ID; ``value`` is the workflow's
    argument."""

    key: str
    value: Any


@runtime_checkable
class EventSource(Protocol):
    """A message source a receiver thread polls.

    ``poll`` returns the next messages (an empty list after ``timeout`` seconds without
    any); ``commit`` acknowledges messages whose workflows were durably started. Delivery
    may repeat (a message polled but not committed before a crash comes again): the
    workflow ID ``<name>-<key>`` makes each message start one workflow all the same.

    Optional methods, used when present: ``wakeup()`` makes a blocked ``poll`` return
    early (called from another thread when the receiver must stop), and ``close()`` is
    called by the receiver thread when it exits.
    """

    @property
    def name(self) -> str:
        """The source's name: the prefix of the IDs of the workflows it starts."""
        ...

    def poll(self, timeout: float) -> list[Event]: ...

    def commit(self, events: Sequence[Event]) -> None: ...


class PollerGate:
    """Admits pollers' workflow starts (and spawns) until shutdown closes it.

    Many pollers may be inside at once (a count, not a lock, so starts never serialise);
    :meth:`close` refuses new entries and waits for the ones inside. ``destroy()`` closes
    the gate before shutdown phase 1, so no poller starts a workflow or spawns a thread
    once the shutdown is being recorded: checking the stop event alone would leave a
    window between the check and the start.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._closed = False

    @contextlib.contextmanager
    def enter(self) -> Iterator[bool]:
        """Yield True when admitted; False once the gate is closed (do nothing then)."""
        with self._cond:
            admitted = not self._closed
            if admitted:
                self._inside += 1
        try:
            yield admitted
        finally:
            if admitted:
                with self._cond:
                    self._inside -= 1
                    self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Refuse new entries, wait at most ``timeout`` for those inside; True if none is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            while self._inside:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        with self._cond:
            return self._closed


def start_once(
    rt: Runtime,
    gate: PollerGate,
    stop: StopEvent,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    workflow_id: str,
) -> bool:
    """Start ``info`` with a deterministic ID unless the ID already exists anywhere.

    Returns False when nothing was started: the ID exists (another process, or an earlier
    run, started it), or the poller is stopping. The stop event is checked inside the gate,
    after the caller's wait: a poller never starts a workflow once it was told to stop.
    """
    with gate.enter() as admitted:
        if not admitted or stop.is_set():
            return False
        start = prepare_workflow(rt, info, args, {}, workflow_id=workflow_id, if_new=True)
        dispatch(rt, info, start)
        return start.run is not None


@dataclass(frozen=True, slots=True)
class ScheduledPoller:
    """A ``@DBOS.scheduled`` registration: one workflow on one cron schedule."""

    info: WorkflowInfo
    cron: str


@dataclass(frozen=True, slots=True)
class ReceiverPoller:
    """A ``@DBOS.event_receiver`` registration: one source feeding one workflow."""

    name: str
    info: WorkflowInfo
    source: EventSource
    poll_timeout_sec: float


class PollerRegistry:
    """Decorated pollers of this process (filled at import time, before ``DBOS()``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scheduled: dict[str, ScheduledPoller] = {}
        self.receivers: dict[str, ReceiverPoller] = {}

    def add_scheduled(self, poller: ScheduledPoller) -> None:
        """Register a scheduled workflow (one schedule per workflow, as in DBOS)."""
        with self._lock:
            existing = self.scheduled.get(poller.info.name)
            if existing is not None and existing != poller:
                raise ValueError(f"workflow {poller.info.name!r} is already @DBOS.scheduled")
            self.scheduled[poller.info.name] = poller

    def add_receiver(self, poller: ReceiverPoller) -> None:
        """Register an event receiver; its name prefixes the IDs it starts, so it is unique."""
        with self._lock:
            existing = self.receivers.get(poller.name)
            if existing is not None and existing != poller:
                raise ValueError(f"an event receiver named {poller.name!r} already exists")
            self.receivers[poller.name] = poller

    def snapshot(self) -> tuple[list[ScheduledPoller], list[ReceiverPoller]]:
        """The registrations now."""
        with self._lock:
            return list(self.scheduled.values()), list(self.receivers.values())

    def clear(self) -> None:
        """Forget every registration (``DBOS.destroy(destroy_registry=True)``)."""
        with self._lock:
            self.scheduled.clear()
            self.receivers.clear()


#: Decorators register here, like ``GLOBAL_REGISTRY`` for workflows.
POLLERS = PollerRegistry()
