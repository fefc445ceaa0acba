"""The ``spindle`` pytest plugin (entry point ``pytest11``): fixtures for apps' test suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spindle.diagnostics import ShutdownTimeline, add_timeline_listener
from spindle.diagnostics import set_default_tracer_provider_for_tests as _set_test_provider

from ._clock import FakeClock
from ._threads import check_no_leaked_threads, thread_idents


@pytest.fixture
def spindle_no_leaked_threads() -> Iterator[None]:
    """Fail the test if a thread it started is still alive when it ends (after a grace)."""
    before = thread_idents()
    yield
    check_no_leaked_threads(before)


def format_violations(timelines: list[ShutdownTimeline]) -> str:
    """The violations of ``timelines`` as the text a failing test prints."""
    lines = []
    for t in timelines:
        for v in t.violations:
            threads = ", ".join(v.thread_names) or "-"
            lines.append(f"[{v.rule}] service={t.service!r} phase={v.phase} threads={threads}")
            lines.append(f"    {v.message}")
    return "\n".join(lines)


@pytest.fixture
def spindle_no_shutdown_violations() -> Iterator[list[ShutdownTimeline]]:
    """Fail the test if any shutdown timeline recorded during it broke an ordering rule.

    Yields the list the timelines are collected in, for tests that want to look at them.
    """
    seen: list[ShutdownTimeline] = []
    remove = add_timeline_listener(seen.append)
    try:
        yield seen
    finally:
        remove()
    bad = [t for t in seen if t.violations]
    if bad:
        pytest.fail("shutdown ordering violations:\n" + format_violations(bad), pytrace=False)


@pytest.fixture
def spindle_span_exporter() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on a fresh SDK provider that new diagnostics sessions will use.

    The provider is not made global (OpenTelemetry sets that once per process): sessions
    created while the fixture is active pick it up through
    ``set_default_tracer_provider_for_tests``.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _set_test_provider(provider)
    try:
        yield exporter
    finally:
        _set_test_provider(None)
        provider.shutdown()


@pytest.fixture
def spindle_fake_clock() -> FakeClock:
    """A :class:`FakeClock` starting now."""
    return FakeClock()
