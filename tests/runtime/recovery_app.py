"""A small app for the crash-recovery test: run as a child process, then killed with -9."""

from __future__ import annotations

import os
import sys
import threading

from spindle import DBOS, SetWorkflowID

_arrived = threading.Semaphore(0)


def log_effect(line: str) -> None:
    """Append a side effect to the effects file, durably."""
    fd = os.open(os.environ["SPINDLE_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@DBOS.step()
def recovery_step(workflow_id: str, i: int) -> int:
    log_effect(f"{workflow_id}:{i}")
    if i == 2 and os.environ.get("SPINDLE_BLOCK") == "1":
        _arrived.release()
        threading.Event().wait()  # the parent kills us here, mid-workflow
    return i


@DBOS.workflow()
def recovery_workflow() -> int:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    total = sum(recovery_step(workflow_id, i) for i in (1, 2, 3))
    log_effect(f"{workflow_id}:done")
    return total


def main() -> None:
    """Start N workflows, say READY once all are inside step 2, then wait to be killed."""
    url, count = sys.argv[1], int(sys.argv[2])
    DBOS(
        config={
            "name": "recovery",
            "system_database_url": url,
            "run_admin_server": False,
            "max_executor_threads": count,
        }
    )
    DBOS.launch()
    for i in range(count):
        with SetWorkflowID(f"rec-{i}"):
            DBOS.start_workflow(recovery_workflow)
    for _ in range(count):
        _arrived.acquire()
    print("READY", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
