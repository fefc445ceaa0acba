"""The in-flight table's watch: a handle waiting for a workflow that is not running here
yet is woken the moment this process starts it, instead of polling the database."""

from __future__ import annotations

import threading

from spindle.runtime._active import ActiveWorkflows


def test_watch_fires_when_the_workflow_starts_here() -> None:
    table = ActiveWorkflows()
    event = threading.Event()
    assert table.watch("wf", event) is None
    other, _ = table.acquire("other", is_async=False)
    assert not event.is_set(), "only its own ID wakes a watcher"
    entry, created = table.acquire("wf", is_async=False)
    assert created
    assert event.is_set()
    # Fired watches are dropped: once running, the watcher is given the entry itself.
    event.clear()
    assert table.watch("wf", event) is entry
    table.release(entry)
    table.release(other)
    table.acquire("wf", is_async=False)
    assert not event.is_set(), "a watch that returned an entry registered nothing"


def test_unwatch_forgets_the_watcher() -> None:
    table = ActiveWorkflows()
    first, second = threading.Event(), threading.Event()
    assert table.watch("wf", first) is None
    assert table.watch("wf", second) is None
    table.unwatch("wf", first)
    table.acquire("wf", is_async=False)
    assert not first.is_set()
    assert second.is_set()
    table.unwatch("wf", second)  # after it fired: a no-op
