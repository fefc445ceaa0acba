"""A child process for the exit tests: a step that never returns, or SIGTERM mid-workflow.

``python -m tests.runtime.exit_app MODE DB_URL REPORT``:

* ``stuck``: a step blocks forever; ``destroy()`` (join timeout 1 s), then the interpreter
  exits; prints ``DESTROYED <seconds destroy took> <wall time it returned>``.
* ``sigterm``: a workflow waits in ``recv``; prints READY and waits to be signalled.
* ``chained``: as ``sigterm``, with the app's own SIGTERM handler installed before launch.
* ``busy``: the main thread starts workflows in a loop (taking the runtime's locks many
  times a millisecond) when SIGTERM arrives.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType

from spindle import DBOS, SetWorkflowID

_entered = threading.Event()
WORKFLOW_ID = "exit-wf"


@DBOS.step()
def exit_blocking_step() -> None:
    _entered.set()
    threading.Event().wait()  # user code that never returns


@DBOS.workflow()
def exit_stuck_workflow() -> None:
    exit_blocking_step()


@DBOS.workflow()
def exit_quick_workflow(i: int) -> int:
    return i


@DBOS.step()
def exit_first_step() -> str:
    return "first"


@DBOS.workflow()
def exit_waiting_workflow() -> str:
    first = exit_first_step()
    _entered.set()
    got = DBOS.recv("go", timeout_seconds=120)
    return f"{first}+{got}"


def main() -> None:
    mode, url, report = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "chained":

        def app_handler(signum: int, _frame: FrameType | None) -> None:
            print("APP-HANDLER", flush=True)
            os._exit(7)

        signal.signal(signal.SIGTERM, app_handler)
    DBOS(
        config={
            "name": "exit-app",
            "system_database_url": url,
            "run_admin_server": False,
            "thread_join_timeout_sec": 1.0,
            "shutdown_report_path": report,
        }
    )
    DBOS.launch()
    if mode == "stuck":
        DBOS.start_workflow(exit_stuck_workflow)
        _entered.wait()
        started = time.monotonic()
        DBOS.destroy()
        print(f"DESTROYED {time.monotonic() - started:.3f} {time.time():.6f}", flush=True)
        return  # the interpreter exits here, with the stuck worker still blocked
    with SetWorkflowID(WORKFLOW_ID):
        DBOS.start_workflow(exit_waiting_workflow)
    _entered.wait()
    print("READY", flush=True)
    if mode == "busy":
        i = 0
        while True:  # a busy main thread, as a server's: SIGTERM lands anywhere in here
            i += 1
            try:
                DBOS.start_workflow(exit_quick_workflow, i)
            except Exception:  # after the shutdown: not launched any more
                threading.Event().wait(0.001)
    threading.Event().wait()  # until SIGTERM


if __name__ == "__main__":
    main()
