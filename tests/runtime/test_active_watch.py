"""The in-flight table's watch: a handle waiting for a workflow that is not running here
yet is handed its entry the moment this process starts it, instead of polling the database."""

from __future__ import annotations

from spindle.runtime._active import (
    FINISHED_KEEP,
    FINISHED_MAX_BYTES,
    ActiveWorkflows,
    StartWatch,
)


def test_watch_fires_when_the_workflow_starts_here() -> None:
    table = ActiveWorkflows()
    watch = StartWatch()
    assert table.watch("wf", watch) is None
    other, _ = table.acquire("other", is_async=False)
    assert not watch.started.is_set(), "only its own ID wakes a watcher"
    entry, created = table.acquire("wf", is_async=False)
    assert created
    assert watch.started.is_set()
    assert watch.entry is entry
    # Fired watches are dropped: once running, the watcher is given the entry itself.
    again = StartWatch()
    assert table.watch("wf", again) is entry
    table.release(entry)
    table.release(other)
    table.acquire("wf", is_async=False)
    assert not again.started.is_set(), "a watch that returned an entry registered nothing"


def test_the_entry_outlives_its_release() -> None:
    # A short run may finish and leave the table before the woken handle looks: the watch
    # still holds that run's entry and its outcome (no status read from the database).
    table = ActiveWorkflows()
    watch = StartWatch()
    table.watch("wf", watch)
    entry, _ = table.acquire("wf", is_async=False)
    entry.finish(result=42)
    table.release(entry)
    assert table.get("wf") is None
    assert watch.entry is entry
    assert entry.outcome() == 42


def test_unwatch_forgets_the_watcher() -> None:
    table = ActiveWorkflows()
    first, second = StartWatch(), StartWatch()
    assert table.watch("wf", first) is None
    assert table.watch("wf", second) is None
    table.unwatch("wf", first)
    table.acquire("wf", is_async=False)
    assert not first.started.is_set()
    assert first.entry is None
    assert second.started.is_set()
    table.unwatch("wf", second)  # after it fired: a no-op


def test_kept_success_outputs_are_bounded_and_dropped_by_a_new_run() -> None:
    table = ActiveWorkflows()
    for i in range(FINISHED_KEEP + 1):
        table.remember_success(f"wf-{i}", b"out")
    assert table.finished_output("wf-0") is None, "the oldest falls out"
    assert table.finished_output(f"wf-{FINISHED_KEEP}") == b"out"
    table.remember_success("big", b"x" * (FINISHED_MAX_BYTES + 1))
    assert table.finished_output("big") is None, "a large output is read from the database"
    # A new run of the same ID here (restart): its outcome is the news, not the kept one.
    table.acquire("wf-1", is_async=False)
    assert table.finished_output("wf-1") is None
    table.forget_finished(["wf-2"])
    assert table.finished_output("wf-2") is None
    table.forget_finished()
    assert table.finished_output("wf-3") is None


def test_forgotten_counts_every_outcome_the_table_does_not_keep() -> None:
    # A handle compares it across its enqueue: unchanged, its workflow did not finish here
    # unseen (a kept success is found by finished_output; anything else moves it).
    table = ActiveWorkflows()
    kept, _ = table.acquire("kept", is_async=False)
    table.remember_success("kept", b"out")
    table.release(kept)
    assert table.forgotten == 0
    failed, _ = table.acquire("failed", is_async=False)
    failed.finish(error=ValueError("no output to keep"))
    table.release(failed)
    assert table.forgotten == 1
    large, _ = table.acquire("large", is_async=False)
    table.remember_success("large", b"x" * (FINISHED_MAX_BYTES + 1))
    table.release(large)
    assert table.forgotten == 2
    table.forget_finished(["kept"])
    assert table.forgotten == 3
    for i in range(FINISHED_KEEP + 1):  # one eviction
        table.remember_success(f"wf-{i}", b"out")
    assert table.forgotten == 4
