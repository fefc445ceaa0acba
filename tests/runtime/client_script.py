"""A process with no workflow code: drives the app of ``test_dbos_client.py`` through a
``DBOSClient`` and prints what it saw as one JSON line. Run as
``python -m tests.runtime.client_script <system database URL> <marker file>``."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from spindle import DBOSClient, DebouncerClient

QUEUE = "client-queue"


def main(url: str, marker: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {"threads_before": threading.active_count()}
    client = DBOSClient(system_database_url=url)
    try:
        add = client.enqueue(
            {"queue_name": QUEUE, "workflow_name": "client_add", "workflow_id": "c-add"}, 2, 3
        )
        seen["add"] = add.get_result()
        seen["add_again"] = client.enqueue(
            {"queue_name": QUEUE, "workflow_name": "client_add", "workflow_id": "c-add"}, 9, 9
        ).get_result()
        status = client.retrieve_workflow("c-add").get_status()
        seen["status"] = [status.name, status.status, status.queue_name, status.input]
        seen["steps"] = [s["function_name"] for s in client.list_workflow_steps("c-add")]
        seen["listed"] = [s.workflow_id for s in client.list_workflows(name="client_add")]

        client.enqueue(
            {"queue_name": QUEUE, "workflow_name": "client_waiter", "workflow_id": "c-wait"}
        )
        seen["ready"] = client.get_event("c-wait", "ready", 30)
        client.send("c-wait", "hello", "greeting")
        seen["got"] = client.get_event("c-wait", "got", 30)
        seen["wait_result"] = client.retrieve_workflow("c-wait").get_result()
        seen["no_event"] = client.get_event("c-wait", "never", 0.05)

        fork = client.fork_workflow("c-add", 1, queue_name=QUEUE)
        seen["fork"] = [fork.get_result(), fork.get_status().forked_from]

        flaky = client.enqueue(
            {"queue_name": QUEUE, "workflow_name": "client_flaky", "workflow_id": "c-flaky"}
        )
        try:
            flaky.get_result()
        except Exception as exc:
            seen["flaky_error"] = f"{type(exc).__name__}: {exc}"
        marker.write_text("go")
        seen["resumed"] = client.resume_workflow("c-flaky").get_result()

        client.enqueue(
            {
                "queue_name": QUEUE,
                "workflow_name": "client_add",
                "workflow_id": "c-later",
                "delay_seconds": 600,
            },
            1,
            1,
        )
        seen["queued"] = [s.workflow_id for s in client.list_queued_workflows(queue_name=QUEUE)]
        client.cancel_workflow("c-later")
        seen["cancelled"] = client.retrieve_workflow("c-later").get_status().status
        client.enqueue(
            {"queue_name": QUEUE, "workflow_name": "client_streamer", "workflow_id": "c-stream"}, 3
        )
        seen["stream"] = list(client.read_stream("c-stream", "numbers"))

        # Debounce by name: three calls, one workflow, the last call's inputs.
        debouncer = DebouncerClient[int](
            client, {"queue_name": QUEUE, "workflow_name": "client_add"}
        )
        calls = [
            debouncer.debounce("k", period, n, n) for period, n in ((600, 1), (600, 2), (0, 3))
        ]
        seen["debounced"] = [len({h.workflow_id for h in calls}), calls[-1].get_result()]
        # wait_first: the first of two to end.
        slow = client.enqueue({"queue_name": QUEUE, "workflow_name": "client_waiter"})
        fast = client.enqueue({"queue_name": QUEUE, "workflow_name": "client_add"}, 4, 4)
        seen["first"] = client.wait_first([slow, fast]).workflow_id == fast.workflow_id
        client.send(slow.workflow_id, "bye", "greeting")
        slow.get_result()
        client.create_schedule(
            schedule_name="c-sched", workflow_name="client_add", schedule="0 0 * * *"
        )
        client.pause_schedule("c-sched")
        seen["schedule"] = [s["status"] for s in client.list_schedules(schedule_name_prefix="c-")]
        seen["threads_during"] = threading.active_count()
    finally:
        client.destroy()
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))), flush=True)
