"""Event receivers: a thread per message source, starting one workflow per message, once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from spindle.diagnostics import StopEvent, ThreadGroup, ThreadKind

from ._pollers import PollerGate, ReceiverPoller, start_once
from ._supervisor import Supervised

if TYPE_CHECKING:
    from ._dbos import DBOS

logger = logging.getLogger("spindle")

#: How long a receiver backs off after its source or a start failed.
RETRY_DELAY_SEC = 1.0


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


def receiver_workflow_id(source_name: str, event: Event) -> str:
    """The ID of the workflow a message starts, the same in every process and delivery."""
    return f"{source_name}-{event.key}"


def _receiver_body(
    rt: DBOS, gate: PollerGate, poller: ReceiverPoller
) -> Callable[[StopEvent], None]:
    source = poller.source

    def body(stop: StopEvent) -> None:
        wakeup = getattr(source, "wakeup", None)
        if callable(wakeup):
            stop.add_callback(wakeup)
        try:
            while not stop.is_set():
                try:
                    events = source.poll(poller.poll_timeout_sec)
                except Exception:
                    if stop.is_set():
                        return
                    logger.exception("spindle: receiver %s: poll failed", poller.name)
                    stop.wait(RETRY_DELAY_SEC)
                    continue
                if events and not _start_all(rt, gate, stop, poller, events):
                    return
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    logger.exception("spindle: receiver %s: closing its source failed", poller.name)

    return body


def _start_all(
    rt: DBOS, gate: PollerGate, stop: StopEvent, poller: ReceiverPoller, events: list[Event]
) -> bool:
    """Start one workflow per event, then commit them all; False when told to stop first.

    Messages are committed only after their workflows' rows exist: a crash in between
    redelivers them, and their IDs make the second delivery start nothing.
    """
    for event in events:
        workflow_id = receiver_workflow_id(poller.source.name, event)
        while True:
            try:
                start_once(rt, gate, stop, poller.info, (event.value,), workflow_id)
                break
            except Exception:
                if stop.is_set():
                    return False
                logger.exception(
                    "spindle: receiver %s: starting %s failed", poller.name, workflow_id
                )
                if stop.wait(RETRY_DELAY_SEC):
                    return False
        if stop.is_set():
            # Uncommitted from here on: they come again after the next launch.
            return False
    try:
        poller.source.commit(events)
    except Exception:
        logger.exception("spindle: receiver %s: commit failed", poller.name)
    return True


def spawn_receiver(rt: DBOS, gate: PollerGate, poller: ReceiverPoller) -> Supervised:
    """Spawn ``dbos-receiver[<name>]`` for one registered receiver."""
    return rt._supervisor.spawn(
        ThreadKind.POLLER,
        f"dbos-receiver[{poller.name}]",
        _receiver_body(rt, gate, poller),
        group=ThreadGroup.POLLER,
    )
