"""Event receivers: a thread per message source, starting one workflow per message, once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from spindle.diagnostics import StopEvent, ThreadGroup, ThreadKind

from ._pollers import Event, PollerGate, ReceiverPoller, start_once
from ._supervisor import Supervised

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

#: How long a receiver backs off after its source or a start failed.
RETRY_DELAY_SEC = 1.0


def receiver_workflow_id(source_name: str, event: Event) -> str:
    """The ID of the workflow a message starts, the same in every process and delivery."""
    return f"{source_name}-{event.key}"


def _receiver_body(
    rt: Runtime, gate: PollerGate, poller: ReceiverPoller
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
    rt: Runtime, gate: PollerGate, stop: StopEvent, poller: ReceiverPoller, events: list[Event]
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


def spawn_receiver(rt: Runtime, gate: PollerGate, poller: ReceiverPoller) -> Supervised:
    """Spawn ``dbos-receiver[<name>]`` for one registered receiver."""
    return rt.supervisor.spawn(
        ThreadKind.POLLER,
        f"dbos-receiver[{poller.name}]",
        _receiver_body(rt, gate, poller),
        group=ThreadGroup.POLLER,
    )
