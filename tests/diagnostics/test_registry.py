"""The registry: bounded memory, foreign threads, waiting_on in snapshots."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest

from spindle.diagnostics import (
    StopEvent,
    ThreadGroup,
    ThreadInfo,
    ThreadKind,
    ThreadRegistry,
    ThreadState,
)
from spindle.runtime._supervisor import Supervisor

WaitUntil = Callable[[Callable[[], bool]], None]


def wait_for_stop(stop: StopEvent) -> None:
    """A well-behaved thread body: wait for the stop event, then return."""
    stop.wait()


@pytest.mark.slow
def test_a_million_short_lived_registrations_keep_record_count_bounded() -> None:
    registry = ThreadRegistry(max_exited=100)
    # One unstarted Thread object serves every registration: the registry keys records by
    # its own id, and creating a million Thread objects would only test CPython.
    thread = threading.Thread(target=lambda: None, name="spindle-short")
    peak_stops = 0
    for i in range(1_000_000):
        stop = registry.new_stop_event("spindle-short", ThreadGroup.INTERNAL)
        record = registry.register_thread(
            thread, kind=ThreadKind.QUEUE, group=ThreadGroup.INTERNAL, stop=stop
        )
        registry.mark_started(record)
        if i % 2:
            stop.set()
        registry.mark_exited(record)
        if i % 10_000 == 0:
            peak_stops = max(peak_stops, len(registry.stop_event_records()))
    assert len(list(registry.records())) == 100
    assert registry.live_records() == []
    assert len(registry.stop_event_records()) <= 4 * 100 + 16
    assert peak_stops <= 4 * 100 + 16
    snap = registry.snapshot()
    assert len(snap.threads) == 100
    # The retained records are the latest ones.
    assert snap.threads[-1].record_id > snap.threads[0].record_id


def test_max_exited_is_configurable_and_validated() -> None:
    assert ThreadRegistry(max_exited=7).max_exited == 7
    with pytest.raises(ValueError, match="max_exited"):
        ThreadRegistry(max_exited=-1)


@pytest.fixture
def foreign_thread() -> Iterator[threading.Thread]:
    """An app thread made with threading.Thread, blocked on an event until the test ends."""
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="app-own-thread", daemon=True)
    t.start()
    yield t
    release.set()
    t.join(10)


def test_snapshot_includes_foreign_threads_only_when_asked(
    registry: ThreadRegistry, supervisor: Supervisor, foreign_thread: threading.Thread
) -> None:
    s = supervisor.spawn(ThreadKind.QUEUE, "dbos-queue-worker[q]", wait_for_stop)
    plain = registry.snapshot()
    assert all(t.kind is not ThreadKind.FOREIGN for t in plain.threads)
    snap = registry.snapshot(include_foreign=True)
    foreign = {t.name: t for t in snap.threads if t.kind is ThreadKind.FOREIGN}
    assert "app-own-thread" in foreign
    assert "MainThread" in foreign
    assert s.name not in foreign
    info = foreign["app-own-thread"]
    assert info.ident == foreign_thread.ident
    assert info.native_id == foreign_thread.native_id
    # The foreign id is stable across snapshots while the thread lives.
    again = registry.snapshot(include_foreign=True)
    same = next(t for t in again.threads if t.name == "app-own-thread")
    assert same.record_id == info.record_id
    assert registry.get(s.record.record_id) is s.record


def test_snapshot_shows_a_blocked_thread_as_waiting_with_what_it_waits_on(
    registry: ThreadRegistry, supervisor: Supervisor, wait_until: WaitUntil
) -> None:
    s = supervisor.spawn(ThreadKind.TIMEOUT, "dbos-timeout", wait_for_stop)

    wait_until(lambda: info_of(registry, s.record.record_id).waiting_on == "event")
    info = info_of(registry, s.record.record_id)
    assert info.state is ThreadState.WAITING
    data = json.loads(json.dumps(registry.snapshot().to_dict()))
    entry = next(t for t in data["threads"] if t["record_id"] == s.record.record_id)
    assert entry["waiting_on"] == "event"
    assert entry["state"] == "waiting"
    # Without with_waiting the state is the record's own and nothing is computed.
    cheap = registry.snapshot(with_waiting=False).by_id(s.record.record_id)
    assert cheap is not None
    assert cheap.waiting_on is None
    assert cheap.state is ThreadState.RUNNING


def test_stopping_state_is_not_overwritten_by_waiting(
    registry: ThreadRegistry, supervisor: Supervisor, wait_until: WaitUntil
) -> None:
    release = threading.Event()

    def ignores_stop(stop: threading.Event) -> None:
        release.wait()

    s = supervisor.spawn(ThreadKind.POLLER, "dbos-poller", ignores_stop, group=ThreadGroup.POLLER)
    s.stop.set()
    wait_until(lambda: info_of(registry, s.record.record_id).waiting_on == "event")
    assert info_of(registry, s.record.record_id).state is ThreadState.STOPPING
    release.set()


def info_of(registry: ThreadRegistry, record_id: int) -> ThreadInfo:
    """The snapshot view of one record, which must exist."""
    info = registry.snapshot().by_id(record_id)
    assert info is not None
    return info
