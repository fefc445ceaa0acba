"""The demo app: durable workflows on the embedded SQLite default, with the dashboard up.

Run it with ``./run demo`` (or ``python -m spindle.demo``); Ctrl-C runs the ordered
shutdown and prints its timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import threading
from datetime import datetime

from spindle import DBOS, DBOSAwaitedWorkflowCancelledError, Queue, SetWorkflowTimeout

emails = Queue("emails", concurrency=4)


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.2)
def reserve_stock(order: int) -> str:
    if random.random() < 0.1:
        raise ConnectionError("inventory service hiccup")
    return f"stock-{order}"


@DBOS.step()
def charge_card(order: int) -> str:
    return f"charge-{order}"


@DBOS.step()
async def send_email(order: int) -> str:
    await asyncio.sleep(0.01)
    return f"email-{order}"


@DBOS.workflow()
def checkout(order: int) -> str:
    stock = reserve_stock(order)
    DBOS.sleep(random.uniform(0.5, 3.0))  # durable: survives a restart
    charge = charge_card(order)
    return f"{stock}/{charge}"


@DBOS.workflow()
async def notify(order: int) -> str:
    return await send_email(order)


@DBOS.scheduled("*/5 * * * * *")
@DBOS.workflow()
def heartbeat(scheduled_time: datetime, actual_time: datetime) -> float:
    return (actual_time - scheduled_time).total_seconds()


@DBOS.workflow()
def slow_batch(size: int) -> int:
    DBOS.sleep(30)
    return size


def main(argv: list[str] | None = None) -> None:
    """Run workflows until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m spindle.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=3001, help="admin/dashboard port")
    parser.add_argument("--database", default="sqlite:///spindle-demo.sqlite")
    parser.add_argument("--rate", type=float, default=2.0, help="orders per second")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    DBOS(
        config={
            "name": "spindle-demo",
            "system_database_url": args.database,
            "enable_diagnostics": True,
            "admin_port": args.port,
            "max_executor_threads": 16,
            "shutdown_report_path": "spindle-demo-shutdown.json",
        }
    )
    DBOS.launch()
    admin = DBOS.admin_url_of_instance()
    print(f"spindle demo running on {args.database}")
    if admin:
        print(f"dashboard: {admin}/dbos/threads   (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    order = 0
    try:
        with SetWorkflowTimeout(120):
            DBOS.start_workflow(slow_batch, 100)
        while not stop.wait(1.0 / args.rate):
            order += 1
            DBOS.start_workflow(checkout, order)
            emails.enqueue(notify, order)
            if order % 10 == 0:
                with SetWorkflowTimeout(0.2):
                    handle = DBOS.start_workflow(checkout, -order)
                try:
                    handle.get_result()
                except DBOSAwaitedWorkflowCancelledError:
                    print(f"order {-order} timed out and was cancelled, as configured")
    except KeyboardInterrupt:
        print("\nshutting down (in-flight workflows stay PENDING and resume next launch)")
    finally:
        DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    if timeline is not None:
        for phase in timeline.phases:
            ms = ((phase.end_mono or phase.start_mono) - phase.start_mono) * 1000
            print(f"  {phase.index:2d} {phase.name:<28} {phase.outcome:<6} {ms:8.1f} ms")
        print(f"  violations: {len(timeline.violations)}")


if __name__ == "__main__":
    main()
