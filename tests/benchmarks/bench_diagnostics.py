"""What diagnostics cost: spawn through the supervisor, dumps, py-spy, spans. Prints a table."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from spindle.diagnostics import (
    EventType,
    StopEvent,
    ThreadGroup,
    ThreadKind,
    ThreadRegistry,
    dump_stacks,
    pyspy_dump,
)
from spindle.diagnostics._spans import SpanEmitter
from spindle.runtime._supervisor import Supervisor

RESULTS: list[tuple[str, str, str]] = []


def record(name: str, value: str, note: str = "") -> None:
    RESULTS.append((name, value, note))


@pytest.fixture(scope="module", autouse=True)
def _table() -> Iterator[None]:
    yield
    width = max(len(r[0]) for r in RESULTS) if RESULTS else 10
    print("\n\nspindle diagnostics benchmarks")
    print(f"{'measure':<{width}}  {'value':>14}  note")
    for name, value, note in RESULTS:
        print(f"{name:<{width}}  {value:>14}  {note}")


def best_of(n: int, fn: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _discard(value: object) -> None:
    del value


def _wait(stop: StopEvent) -> None:
    stop.wait()


def test_bench_spawn_vs_bare_thread() -> None:
    # Thread creation cost drifts with the number of live threads and OS noise: alternate
    # rounds of each and compare medians.
    n, rounds = 100, 7
    spawn_times: list[float] = []
    bare_times: list[float] = []
    for _ in range(rounds):
        registry = ThreadRegistry()
        sup = Supervisor(registry)
        start = time.perf_counter()
        for i in range(n):
            sup.spawn(ThreadKind.QUEUE, f"dbos-queue-worker[{i}]", _wait)
        spawn_times.append((time.perf_counter() - start) / n)
        sup.signal(ThreadGroup.INTERNAL)
        for s in sup.threads():
            sup.reap(s, 10)

        release = threading.Event()
        threads = []
        start = time.perf_counter()
        for i in range(n):
            t = threading.Thread(target=release.wait, name=f"bare-{i}", daemon=True)
            t.start()
            threads.append(t)
        bare_times.append((time.perf_counter() - start) / n)
        release.set()
        for t in threads:
            t.join(10)
    spawn = statistics.median(spawn_times)
    bare = statistics.median(bare_times)
    note = f"median of {rounds} rounds of {n}"
    record("supervisor.spawn (per thread)", f"{spawn * 1e6:.0f} us", note)
    record("threading.Thread.start (per thread)", f"{bare * 1e6:.0f} us", note)
    record("spawn overhead", f"{(spawn - bare) * 1e6:.0f} us", f"x{spawn / bare:.2f}")


@pytest.fixture(scope="module")
def five_hundred() -> Iterator[ThreadRegistry]:
    registry = ThreadRegistry()
    sup = Supervisor(registry)
    for i in range(500):
        sup.spawn(ThreadKind.QUEUE, f"dbos-queue-worker[{i}]", _wait)
    yield registry
    sup.signal(ThreadGroup.INTERNAL)
    for s in sup.threads():
        sup.reap(s, 10)


def _ms(times: Sequence[float]) -> str:
    return f"{statistics.median(times) * 1e3:.1f} ms"


def test_bench_in_process_dump_of_500_threads(five_hundred: ThreadRegistry) -> None:
    times = best_of(7, lambda: _discard(dump_stacks(five_hundred)))
    record("dump_stacks, 500 threads (median)", _ms(times), "target <= 50 ms")
    snap = best_of(7, lambda: _discard(five_hundred.snapshot(include_foreign=True)))
    record("snapshot+waiting_on, 500 threads", _ms(snap), "")
    cheap = best_of(7, lambda: _discard(five_hundred.snapshot(with_waiting=False)))
    record("snapshot without waiting_on", _ms(cheap), "")
    assert statistics.median(times) <= 0.050


def test_bench_pyspy_dump(five_hundred: ThreadRegistry) -> None:
    times = best_of(3, lambda: _discard(pyspy_dump(registry=five_hundred, timeout=60)))
    record("py-spy dump, ~500 threads (median)", _ms(times), "subprocess + ptrace")
    small = ThreadRegistry()
    times = best_of(3, lambda: _discard(pyspy_dump(registry=small, timeout=60)))
    record("py-spy dump, same process, registry empty", _ms(times), "")


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def test_bench_span_emission_per_event() -> None:
    n = 20_000

    def emit_all(registry: ThreadRegistry) -> float:
        start = time.perf_counter()
        for _ in range(n):
            registry.emit(EventType.DB_INTERRUPT, None, database="system")
        return (time.perf_counter() - start) / n

    bare = emit_all(ThreadRegistry())
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=n * 2))
    registry = ThreadRegistry()
    registry.add_listener(SpanEmitter(registry, provider.get_tracer("bench")))
    with_spans = emit_all(registry)
    provider.shutdown()
    record("registry.emit, no listener", f"{bare * 1e6:.1f} us", f"n={n}")
    record("registry.emit + span (batch)", f"{with_spans * 1e6:.1f} us", "")
    record("span emission cost per event", f"{(with_spans - bare) * 1e6:.1f} us", "")
