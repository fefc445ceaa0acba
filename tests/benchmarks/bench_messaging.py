"""Send -> recv wake-up latency on both backends (a script; `./run bench` runs it too).

    PYTHONPATH=. python tests/benchmarks/bench_messaging.py [--count 1000] [--backend both]

A receiver workflow loops on ``DBOS.recv``. For each message the sender (outside any
workflow) first waits until the receiver is parked in its wait (so every sample measures
the wake-up path, not a message already waiting), then sends. Two figures per message:

* ``send->recv``: from calling ``DBOS.send`` to ``DBOS.recv`` returning in the receiver;
* ``commit->recv``: from ``DBOS.send`` returning (the row is committed) to ``recv`` returning:
  the notification path (NOTIFY + listener + the receiver's consuming transaction on
  PostgreSQL; the in-process wake-up + that transaction on SQLite).

Each message needs two durable commits on its path (the send; recv's delete + checkpoint),
so the disk's fsync time is a floor: ``pg-floor`` is one INSERT + COMMIT on this server;
``postgres-nosync`` reruns PostgreSQL with ``synchronous_commit=off`` on the throw-away
benchmark database only, to show the runtime's own share apart from the disk.
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from spindle import DBOS
from spindle.runtime._notifications import message_key

TOPIC = "bench"
_arrivals: queue.Queue[tuple[int, float]] = queue.Queue()


@DBOS.workflow()
def bench_receiver(count: int) -> int:
    """Receive ``count`` messages, timestamping each arrival."""
    for _ in range(count):
        msg = DBOS.recv(TOPIC, timeout_seconds=30)
        _arrivals.put((msg, time.perf_counter()))
    return count


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def run(url: str, count: int, warmup: int) -> dict[str, Any]:
    """Run one backend; returns the figures in milliseconds."""
    DBOS(
        config={
            "name": "bench-messaging",
            "system_database_url": url,
            "run_admin_server": False,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        total = warmup + count
        handle = DBOS.start_workflow(bench_receiver, total)
        waiters = DBOS.runtime.listener.waiters
        key = message_key(handle.workflow_id, TOPIC)
        send_to_recv: list[float] = []
        commit_to_recv: list[float] = []
        for i in range(total):
            if not waiters.wait_parked(key, 30):
                raise RuntimeError("the receiver never parked")
            t0 = time.perf_counter()
            DBOS.send(handle.workflow_id, i, TOPIC)
            t1 = time.perf_counter()
            msg, t_recv = _arrivals.get(timeout=30)
            if msg != i:
                raise RuntimeError(f"expected message {i}, got {msg}")
            if i >= warmup:
                send_to_recv.append((t_recv - t0) * 1000)
                commit_to_recv.append((t_recv - t1) * 1000)
        handle.get_result()
    finally:
        DBOS.destroy(destroy_registry=False)
    return {
        "send->recv": (statistics.median(send_to_recv), _percentile(send_to_recv, 99)),
        "commit->recv": (statistics.median(commit_to_recv), _percentile(commit_to_recv, 99)),
    }


def _pg_database(base: str) -> tuple[str, sa.Engine]:
    name = f"spindle_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres",
        isolation_level="AUTOCOMMIT",
    )
    return name, admin


def commit_floor(base: str, samples: int = 300) -> tuple[float, float]:
    """Median and p99 (ms) of one durable INSERT + COMMIT on this PostgreSQL."""
    url = base.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres"
    engine = sa.create_engine(url)
    times: list[float] = []
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TEMP TABLE floor_probe (x int)")
            conn.commit()
            for _ in range(samples):
                t0 = time.perf_counter()
                conn.exec_driver_sql("INSERT INTO floor_probe VALUES (1)")
                conn.commit()
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        engine.dispose()
    return statistics.median(times), _percentile(times, 99)


def measured() -> str:
    """The Spindle this process imported: its version and where from."""
    import spindle

    try:
        version = metadata.version("spindle")
    except metadata.PackageNotFoundError:
        version = "(not installed: imported from a source tree)"
    return f"spindle {version} ({Path(spindle.__file__ or '?').resolve().parent})"


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the chosen backends and print a table; 1 if a backend could
    not run (it is named), 0 when every row has figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--pg-base",
        default=os.environ.get("SPINDLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
    )
    args = parser.parse_args(argv)
    print(f"bench: measuring {measured()}", file=sys.stderr, flush=True)
    results: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.sqlite"
            results["sqlite"] = run(url, args.count, args.warmup)
    if args.backend in ("postgres", "both"):
        for label, settings in (("postgres", None), ("postgres-nosync", "off")):
            try:
                results[label] = _run_postgres(args, settings)
            except Exception as exc:
                failed[label] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        try:
            results["pg-floor"] = {"1 commit": commit_floor(args.pg_base)}
        except Exception as exc:
            failed["pg-floor"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    print(f"{args.count} messages per backend (after {args.warmup} warm-up), milliseconds")
    print(f"{'backend':<10} {'figure':<14} {'median':>8} {'p99':>8}")
    for backend, figures in results.items():
        for figure, (median, p99) in figures.items():
            print(f"{backend:<10} {figure:<14} {median:>8.3f} {p99:>8.3f}")
    for backend, error in failed.items():
        print(f"{backend:<10} could not run: {error}")
    print(f"measured: {measured()}")
    sys.stdout.flush()
    return 1 if failed else 0


def _run_postgres(args: argparse.Namespace, settings: str | None) -> dict[str, Any]:
    """One PostgreSQL row on a throw-away database (``synchronous_commit`` as given)."""
    name, admin = _pg_database(args.pg_base)
    try:
        if settings is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit = {settings}')
        return run(f"{args.pg_base}/{name}", args.count, args.warmup)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_messaging_latency() -> None:
    """``./run bench`` (pytest -s): send->recv latency, printed; fails if a row could not run.

    SPINDLE_BENCH_MESSAGING_ARGS passes options, e.g. ``--backend sqlite --count 200``.
    """
    assert main(shlex.split(os.environ.get("SPINDLE_BENCH_MESSAGING_ARGS", ""))) == 0


if __name__ == "__main__":
    raise SystemExit(main())
