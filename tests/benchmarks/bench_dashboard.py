"""Server time to render /threads with 5,000 and with 50 registered live threads.

Targets: <= 100 ms for 5,000 threads, <= 5 ms for 50. The figure is the app's own
``Server-Timing`` (request in to response head, so the whole render), median of several runs.
Two cases: an idle registry (the dashboard polling a quiet runtime, the registry snapshot
reused) and "changed", where a registry event precedes every request so each render takes
a fresh snapshot (a busy runtime). The target is checked on the idle case; both are printed.

Run: ``./run bench`` or ``python tests/benchmarks/bench_dashboard.py``.
"""

from __future__ import annotations

import statistics
import threading

from starlette.testclient import TestClient

from spindle.diagnostics import DiagnosticsSession, StopEvent, ThreadKind, ThreadRegistry
from spindle.runtime._supervisor import Supervisor
from spindle.web import create_app

KINDS = [ThreadKind.QUEUE, ThreadKind.SCHEDULER, ThreadKind.POLLER, ThreadKind.TIMEOUT]
RUNS = 15


def idle(stop: StopEvent) -> None:
    """Waits on its stop event, like every well-behaved runtime thread."""
    while not stop.wait(60.0):
        pass


def measure(n: int) -> tuple[float, float, float, int]:
    """Median idle ms, best idle ms, median changed ms and body size for ``n`` threads."""
    registry = ThreadRegistry()
    supervisor = Supervisor(registry)
    old = threading.stack_size(256 * 1024)  # 5,000 threads: keep the address space modest
    try:
        managers = [supervisor.spawn(k, f"dbos-{k.value}-manager", idle) for k in KINDS]
        for i in range(n - len(managers)):
            parent = managers[i % len(managers)]
            supervisor.spawn(
                parent.record.kind, f"dbos-{parent.record.kind.value}-worker[{i}]", idle,
                parent=parent.record,
            )  # fmt: skip
    finally:
        threading.stack_size(old)
    session = DiagnosticsSession(registry, service_name="bench", enabled=True)
    try:
        with TestClient(create_app(session)) as client:
            client.get("/threads")  # warm the template cache
            times = []
            changed = []
            size = 0
            record = managers[0].record
            for i in range(RUNS):
                r = client.get("/threads")
                assert r.status_code == 200
                size = len(r.content)
                times.append(_server_ms(r.headers["server-timing"]))
                registry.set_status(record, f"tick {i}")  # an event: the snapshot is stale
                r = client.get("/threads")
                changed.append(_server_ms(r.headers["server-timing"]))
        return statistics.median(times), min(times), statistics.median(changed), size
    finally:
        for s in supervisor.threads():
            s.stop.set()
        for s in supervisor.threads():
            supervisor.reap(s, 10.0)


def _server_ms(header: str) -> float:
    return float(header.split("dur=")[1])


def report(n: int, target_ms: float) -> float:
    """Measure, print the figures and return the idle median."""
    median, best, changed, size = measure(n)
    verdict = "ok" if median <= target_ms else "OVER TARGET"
    print(
        f"/threads with {n:>5} threads: idle median {median:7.2f} ms (best {best:6.2f}), "
        f"after an event {changed:7.2f} ms, page {size / 1024:6.1f} KiB "
        f"(target <= {target_ms:g} ms: {verdict})"
    )
    return median


def test_threads_page_with_5000_threads() -> None:
    """5,000 registered live threads render in <= 100 ms of server time."""
    assert report(5000, 100.0) <= 100.0


def test_threads_page_with_50_threads() -> None:
    """50 registered live threads render in <= 5 ms of server time."""
    assert report(50, 5.0) <= 5.0


if __name__ == "__main__":
    report(50, 5.0)
    report(5000, 100.0)
