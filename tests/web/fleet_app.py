"""An app process for the fleet tests: connects to a conductor, runs one workflow that
waits, and shuts down when told to on stdin.

    python -m tests.web.fleet_app NAME SYSTEM_DB_URL CONDUCTOR_URL KEY [FAULT]
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from spindle import DBOS

_release = threading.Event()


@DBOS.step()
def wait_for_stop() -> str:
    _release.wait(60)
    return "stopped"


@DBOS.workflow()
def waiting_workflow() -> str:
    return wait_for_stop()


@DBOS.step()
def add(a: int, b: int) -> int:
    return a + b


@DBOS.workflow()
def adding(a: int, b: int) -> int:
    return add(a, b)


def main() -> int:
    name, db_url, conductor_url, key = sys.argv[1:5]
    config: dict[str, Any] = {
        "name": name,
        "system_database_url": db_url,
        "executor_id": f"{name}-1",
        "application_version": "1.0",
        "run_admin_server": False,
        "conductor_url": conductor_url,
        "conductor_key": key,
    }
    if len(sys.argv) > 5:
        config["diagnostics_fault"] = sys.argv[5]
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()
    DBOS.start_workflow(adding, 2, 3).get_result()
    handle = DBOS.start_workflow(waiting_workflow)
    print(f"ready {handle.workflow_id}", flush=True)
    sys.stdin.readline()  # "stop", or EOF when the test ends
    _release.set()
    DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
