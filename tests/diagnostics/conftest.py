"""Fixtures for the diagnostics tests: a registry, a supervisor, and a leak check on every test."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from spindle.diagnostics import ThreadRegistry
from spindle.runtime._supervisor import Supervisor
from spindle.testing import check_no_leaked_threads, thread_idents

# The plugin's fixtures, imported so this folder uses them even before the package is
# reinstalled with its pytest11 entry point (pytest_plugins is not allowed outside the root
# conftest, which is being written on main).
from spindle.testing._plugin import (  # noqa: F401
    spindle_no_leaked_threads,
    spindle_no_shutdown_violations,
    spindle_span_exporter,
)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Every test in this folder must end with no thread it started still alive."""
    before = thread_idents()
    yield
    check_no_leaked_threads(before, grace=10.0)


@pytest.fixture
def registry() -> ThreadRegistry:
    """A fresh registry."""
    return ThreadRegistry()


@pytest.fixture
def supervisor(registry: ThreadRegistry) -> Iterator[Supervisor]:
    """A supervisor whose threads are all signalled and joined when the test ends."""
    sup = Supervisor(registry)
    yield sup
    for s in sup.threads():
        s.stop.set()
    for s in sup.threads():
        s.thread.join(10.0)


WaitUntil = Callable[[Callable[[], bool]], None]


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> WaitUntil:
    """The :func:`wait_until` helper, as a fixture (test modules cannot import conftest)."""
    return wait_until


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Spin (yielding the CPU) until ``predicate()`` holds; for states no event announces.

    A thread "blocked inside Event.wait" has no event of its own to announce it, so the test
    watches its stack; os.sched_yield gives the CPU away without a timed sleep.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s: {predicate}")
        os.sched_yield()
