"""StopEvent callbacks run exactly once, however ``set`` and ``add_callback`` interleave."""

from __future__ import annotations

import threading
from collections import Counter

from spindle.diagnostics import EventType, StopEvent, ThreadGroup, ThreadRegistry


class _HeldRegistry(ThreadRegistry):
    """Holds the first ``set()`` inside its bookkeeping until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.recorded = 0

    def _stop_event_was_set(self, event: StopEvent) -> None:
        self.recorded += 1
        self.entered.set()
        self.release.wait()
        super()._stop_event_was_set(event)


def test_a_callback_added_while_set_is_running_runs_once() -> None:
    registry = _HeldRegistry()
    stop = registry.new_stop_event("dbos-test", ThreadGroup.INTERNAL)
    calls: Counter[str] = Counter()
    setter = threading.Thread(target=stop.set)
    setter.start()
    try:
        # The setter is between "the flag is set" and "run the callbacks".
        assert registry.entered.wait(10)
        stop.add_callback(lambda: calls.update(["late"]))
    finally:
        registry.release.set()
        setter.join(10)
    assert not setter.is_alive()
    assert calls == Counter({"late": 1})
    assert registry.recorded == 1


def test_concurrent_sets_and_adds_run_every_callback_exactly_once() -> None:
    for _ in range(200):
        registry = ThreadRegistry()
        stop = registry.new_stop_event("dbos-test", ThreadGroup.INTERNAL)
        sets: list[object] = []
        registry.add_listener(
            lambda e, out=sets: out.append(e) if e.type is EventType.STOP_EVENT_SET else None  # type: ignore[misc]
        )
        calls: Counter[int] = Counter()
        lock = threading.Lock()

        def count(n: int, c: Counter[int] = calls, lk: threading.Lock = lock) -> None:
            with lk:
                c[n] += 1

        barrier = threading.Barrier(4)

        def setter(s: StopEvent = stop, b: threading.Barrier = barrier) -> None:
            b.wait()
            s.set()

        def adder(base: int, s: StopEvent = stop, b: threading.Barrier = barrier) -> None:
            b.wait()
            for n in range(base, base + 5):
                s.add_callback(lambda n=n: count(n))  # type: ignore[misc]

        threads = [
            threading.Thread(target=setter),
            threading.Thread(target=setter),
            threading.Thread(target=adder, args=(0,)),
            threading.Thread(target=adder, args=(5,)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
        assert calls == Counter(range(10))
        assert len(sets) == 1


def test_a_callback_may_add_another_callback_and_set_again() -> None:
    """Callbacks run outside the lock: re-entering the event from one does not deadlock."""
    registry = ThreadRegistry()
    stop = registry.new_stop_event("dbos-test", ThreadGroup.INTERNAL)
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        stop.set()
        stop.add_callback(lambda: calls.append("nested"))

    stop.add_callback(first)
    stop.set()
    assert calls == ["first", "nested"]
