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
from ._threads import DEFAULT_GRACE_SEC, check_no_leaked_threads, thread_idents

GRACE_INI = "spindle_leaked_thread_grace_sec"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ini option: how long threads get to exit before they count as leaked."""
    parser.addini(
        GRACE_INI,
        help="seconds a test's threads get to exit before spindle_no_leaked_threads "
        f"fails it (default {DEFAULT_GRACE_SEC})",
        default=str(DEFAULT_GRACE_SEC),
    )


def leaked_thread_grace(config: pytest.Config) -> float:
    """The configured grace, or a clear error naming the ini key."""
    raw = config.getini(GRACE_INI)
    try:
        grace = float(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{GRACE_INI} must be a number of seconds, not {raw!r}") from None
    if grace < 0:
        raise pytest.UsageError(f"{GRACE_INI} must be >= 0, not {raw!r}")
    return grace


@pytest.fixture
def spindle_no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if a thread it started is still alive when it ends (after a grace:
    ini ``spindle_leaked_thread_grace_sec``, default 1 s)."""
    grace = leaked_thread_grace(request.config)
    before = thread_idents()
    yield
    check_no_leaked_threads(before, grace=grace)


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
