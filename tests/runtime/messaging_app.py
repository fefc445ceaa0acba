"""Child process for the messaging crash test: receiver and sender are killed with -9 mid-way.

The receiver has taken message m1 (checkpointed) and blocks in the step after it; the sender
has sent m2 (checkpointed, not yet received) and set an event, and blocks too. The parent
kills us, recovers both workflows and checks that every message is delivered exactly once.
"""

from __future__ import annotations

import os
import sys
import threading

from spindle import DBOS, SetWorkflowID
from tests.runtime.recovery_app import log_effect

RECEIVER_ID = "msg-receiver"
SENDER_ID = "msg-sender"
TOPIC = "t"

_arrived = threading.Semaphore(0)


@DBOS.step()
def note(what: str) -> str:
    """Log a side effect; in the child, block forever after the ones the test kills at."""
    log_effect(what)
    if os.environ.get("SPINDLE_BLOCK") == "1" and what in ("recv:m1", "sent:m2"):
        _arrived.release()
        threading.Event().wait()  # the parent kills us here
    return what


@DBOS.workflow()
def msg_receiver(count: int) -> list[str]:
    """Receive ``count`` messages, noting each."""
    got = []
    for _ in range(count):
        msg = DBOS.recv(TOPIC, timeout_seconds=60)
        got.append(msg)
        note(f"recv:{msg}")
    return got


@DBOS.workflow()
def msg_sender(destination: str) -> str:
    """Send m2 and publish that it did, then note it."""
    DBOS.send(destination, "m2", TOPIC)
    DBOS.set_event("sent", "m2")
    note("sent:m2")
    return "sent"


def main() -> None:
    """Start both, say READY once both block, then wait to be killed."""
    url = sys.argv[1]
    DBOS(config={"name": "messaging", "system_database_url": url, "run_admin_server": False})
    DBOS.launch()
    with SetWorkflowID(RECEIVER_ID):
        DBOS.start_workflow(msg_receiver, 3)
    DBOS.send(RECEIVER_ID, "m1", TOPIC)
    _arrived.acquire()  # the receiver took m1 and blocks after it
    with SetWorkflowID(SENDER_ID):
        DBOS.start_workflow(msg_sender, RECEIVER_ID)
    _arrived.acquire()  # m2 is in the table, unreceived
    print("READY", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
