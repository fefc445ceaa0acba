"""A small app the CLI tests run as a child process: diagnostics on, admin server on port 0.

``python -m tests.cli.cli_app DB_URL TOKEN REPORT_PATH`` prints ``READY <admin url>`` once a
workflow has finished, one is blocked inside a step (an executor thread busy with it) and one
waits in a rate-limited queue; it shuts down when its standard input closes.
"""

from __future__ import annotations

import sys
import threading

from spindle import DBOS, Queue, SetWorkflowID

release = threading.Event()
inside = threading.Event()
slow = Queue("cli-slow", limiter={"limit": 1, "period": 3600})


@DBOS.step()
def add_one(x: int) -> int:
    return x + 1


@DBOS.step()
def wait_for_release() -> str:
    inside.set()
    release.wait()
    return "released"


@DBOS.workflow()
def cli_done(x: int) -> int:
    return add_one(x) + add_one(x + 10)


@DBOS.workflow()
def cli_blocked() -> str:
    return wait_for_release()


@DBOS.workflow()
def cli_queued(x: int) -> int:
    return x


def main() -> None:
    """Run until stdin closes, then shut down (writing the report)."""
    url, token, report = sys.argv[1], sys.argv[2], sys.argv[3]
    DBOS(
        config={
            "name": "cli-app",
            "system_database_url": url,
            "admin_port": 0,
            "enable_diagnostics": True,
            "admin_token": token or None,
            "shutdown_report_path": report,
            "max_executor_threads": 4,
            "sys_db_pool_size": 4,
            "thread_join_timeout_sec": 5.0,
        }
    )
    DBOS.launch()
    with SetWorkflowID("cli-done"):
        assert DBOS.start_workflow(cli_done, 1).get_result() == 14
    with SetWorkflowID("cli-blocked"):
        DBOS.start_workflow(cli_blocked)
    inside.wait(30)
    with SetWorkflowID("cli-queued-1"):
        slow.enqueue(cli_queued, 1)
    with SetWorkflowID("cli-queued-2"):
        slow.enqueue(cli_queued, 2)  # the limiter keeps this one ENQUEUED
    print(f"READY {DBOS.runtime.admin_url}", flush=True)
    sys.stdin.read()
    release.set()
    DBOS.destroy(workflow_completion_timeout_sec=5)
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
