"""What ``enable_diagnostics`` costs a running app: workflow throughput on vs off, one run.

Rounds alternate off/on on each backend (so drift in the disk's speed hits both alike) and
the median of each is compared; spans go through the SDK's BatchSpanProcessor to an exporter
that drops them, so the cost measured is Spindle's and the SDK's, not a collector's.
Run: ``./run bench tests/benchmarks/bench_diag_overhead.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from spindle import DBOS
from spindle.diagnostics import set_default_tracer_provider_for_tests

ROUNDS = 5
SEQUENTIAL = 300
CONCURRENT = 300
RESULTS: list[str] = []


class _Drop(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@DBOS.step()
def bench_step(x: int) -> int:
    return x + 1


@DBOS.workflow()
def bench_workflow(x: int) -> int:
    return bench_step(x) + bench_step(x) + bench_step(x)


@pytest.fixture(scope="module", autouse=True)
def _table() -> Iterator[None]:
    yield
    print("\n\nenable_diagnostics on vs off (median of", ROUNDS, "alternating rounds)")
    for line in RESULTS:
        print(line)


def _round(url: str, diagnostics: bool) -> tuple[float, float]:
    DBOS(
        config={
            "name": "bench-diag",
            "system_database_url": url,
            "run_admin_server": False,
            "enable_diagnostics": diagnostics,
            "max_executor_threads": 16,
        }
    )
    DBOS.launch()
    try:
        start = time.perf_counter()
        for i in range(SEQUENTIAL):
            bench_workflow(i)
        seq = SEQUENTIAL / (time.perf_counter() - start)
        start = time.perf_counter()
        handles = [DBOS.start_workflow(bench_workflow, i) for i in range(CONCURRENT)]
        for h in handles:
            h.get_result()
        conc = CONCURRENT / (time.perf_counter() - start)
    finally:
        DBOS.destroy()
    return seq, conc


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_bench_diagnostics_overhead(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'bench.sqlite'}"
    else:
        from tests.conftest import new_postgres_url

        gen = new_postgres_url()
        url = next(gen)
    exporter = _Drop()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    set_default_tracer_provider_for_tests(provider)
    off: list[tuple[float, float]] = []
    on: list[tuple[float, float]] = []
    try:
        for _ in range(ROUNDS):
            off.append(_round(url, False))
            on.append(_round(url, True))
    finally:
        set_default_tracer_provider_for_tests(None)
        provider.shutdown()
        if backend == "postgres":
            for _ in gen:
                pass
    for label, index in (("sequential", 0), ("concurrent", 1)):
        a = statistics.median(r[index] for r in off)
        b = statistics.median(r[index] for r in on)
        RESULTS.append(
            f"  {backend:<8} {label:<10} off {a:8.1f} wf/s   on {b:8.1f} wf/s   "
            f"on/off {b / a:6.3f}  ({(1 - b / a) * 100:+.1f}% slower)"
        )
    RESULTS.append(f"  {backend:<8} spans exported with diagnostics on: {exporter.count}")
    assert exporter.count > 0
