"""A small app for the two-process scheduler test: a 1-second cron, run for a few seconds."""

from __future__ import annotations

import os
import sys
import threading
from datetime import datetime

from spindle import DBOS


def log_effect(path: str, line: str) -> None:
    """Append one line to the effects file, durably (both processes append)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@DBOS.scheduled("* * * * * *")
@DBOS.workflow()
def every_second(scheduled_time: datetime, actual_time: datetime) -> None:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    log_effect(os.environ["SPINDLE_EFFECTS"], workflow_id)


def main() -> None:
    """Run the scheduler for N seconds as executor ``name``, then shut down cleanly."""
    url, name, seconds, effects = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    os.environ["SPINDLE_EFFECTS"] = effects
    DBOS(
        config={
            "name": "sched-app",
            "system_database_url": url,
            "run_admin_server": False,
            "executor_id": name,
        }
    )
    DBOS.launch()
    print("READY", flush=True)
    threading.Event().wait(seconds)  # the app's lifetime, not a synchronisation
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    if timeline is None or timeline.violations:
        raise SystemExit(f"shutdown violations: {timeline}")
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
