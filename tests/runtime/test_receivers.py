"""Event receivers: one workflow per message, exactly once across restarts; Kafka."""

from __future__ import annotations

import collections
import os
import queue
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from spindle import DBOS, DBOSException, Event, EventSource, KafkaMessage
from spindle.diagnostics import EventType, ThreadGroup, ThreadKind
from spindle.runtime._pollers import POLLERS
from tests.conftest import MakeDBOS

received: queue.Queue[Any] = queue.Queue()
runs: collections.Counter[str] = collections.Counter()
_runs_lock = threading.Lock()


@DBOS.workflow()
def on_message(value: str) -> str:
    with _runs_lock:
        runs[value] += 1
    received.put(value)
    return value.upper()


@DBOS.workflow()
def on_kafka(message: KafkaMessage) -> None:
    received.put(message)


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    while not received.empty():
        received.get_nowait()
    runs.clear()
    POLLERS.clear()
    yield
    POLLERS.clear()


class MemorySource:
    """An in-process source with Kafka's delivery contract: a new session (after
    ``close()``) starts again from the last committed position, so messages polled but not
    committed are delivered again."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._messages: list[str] = []
        self._cursor = 0
        self._committed = 0
        self._woken = False
        self.lose_commits = False
        self.commit_calls: queue.Queue[list[str]] = queue.Queue()

    @property
    def name(self) -> str:
        return self._name

    def publish(self, *values: str) -> None:
        with self._cond:
            self._messages.extend(values)
            self._cond.notify_all()

    def poll(self, timeout: float) -> list[Event]:
        with self._cond:
            if self._cursor >= len(self._messages) and not self._woken:
                self._cond.wait(timeout)  # bounded by the receiver's poll timeout
            self._woken = False
            start, self._cursor = self._cursor, len(self._messages)
            return [Event(str(i), v) for i, v in enumerate(self._messages[start:], start)]

    def commit(self, events: Sequence[Event]) -> None:
        with self._cond:
            if not self.lose_commits:
                self._committed = max(self._committed, max(int(e.key) for e in events) + 1)
        self.commit_calls.put([e.key for e in events])

    def wakeup(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._cursor = self._committed


def test_memory_source_satisfies_the_protocol() -> None:
    """The protocol is structural: name, poll(timeout) and commit(events)."""
    assert isinstance(MemorySource("m"), EventSource)
    with pytest.raises(TypeError, match="poll"):
        DBOS.event_receiver(object())  # type: ignore[arg-type]


def test_one_workflow_per_message_across_a_restart(make_dbos: MakeDBOS) -> None:
    """Messages delivered again after a restart (their commit was lost) start nothing new;
    new ones start once each. IDs are <source>-<key>."""
    source = MemorySource("mem")
    DBOS.event_receiver(source)(on_message)
    make_dbos().launch()
    receiver = [t for t in DBOS.thread_registry.snapshot().threads if t.name.startswith("dbos-r")]
    assert [(t.name, t.kind, t.group) for t in receiver] == [
        ("dbos-receiver[mem]", ThreadKind.POLLER, ThreadGroup.POLLER)
    ]

    source.lose_commits = True  # as if the process died between start and commit
    source.publish("a", "b", "c")
    assert source.commit_calls.get(timeout=10) == ["0", "1", "2"]
    assert sorted(received.get(timeout=10) for _ in range(3)) == ["a", "b", "c"]
    DBOS.destroy()

    source.lose_commits = False
    source.publish("d", "e")
    DBOS.launch()  # the new session starts from the last commit: a..e come again
    assert source.commit_calls.get(timeout=10) == ["0", "1", "2", "3", "4"]
    ids = [f"mem-{i}" for i in range(5)]
    assert [DBOS.retrieve_workflow(i).get_result() for i in ids] == ["A", "B", "C", "D", "E"]
    assert sorted(received.get(timeout=10) for _ in range(2)) == ["d", "e"]
    assert runs == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}
    assert len(DBOS.list_workflows(name="on_message")) == 5

    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []
    exits = [e for e in timeline.events if e.type is EventType.EXIT]
    assert "dbos-receiver[mem]" in {e.thread_name for e in exits}


def test_kafka_consumer_without_confluent_kafka_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The extra is optional: a clear error at decoration time names it."""
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    with pytest.raises(DBOSException, match=r"pip install 'spindle\[kafka\]'"):
        DBOS.kafka_consumer({"bootstrap.servers": "localhost:9092"}, ["t"])


KAFKA = os.environ.get("SPINDLE_TEST_KAFKA_BOOTSTRAP")


@pytest.mark.skipif(not KAFKA, reason="set SPINDLE_TEST_KAFKA_BOOTSTRAP=host:port to run")
def test_kafka_consumer_against_a_real_broker(make_dbos: MakeDBOS) -> None:
    """Each produced message starts one workflow with ID kafka-<group>-<topic>-<p>-<offset>."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    topic = f"spindle-test-{uuid.uuid4().hex[:8]}"
    group = f"spindle-group-{uuid.uuid4().hex[:8]}"
    producer = confluent_kafka.Producer({"bootstrap.servers": KAFKA})
    for i in range(3):
        producer.produce(topic, key=f"k{i}", value=f"v{i}")
    assert producer.flush(30) == 0
    DBOS.kafka_consumer({"bootstrap.servers": KAFKA, "group.id": group}, [topic])(on_kafka)
    make_dbos().launch()
    messages = sorted((received.get(timeout=60) for _ in range(3)), key=lambda m: m.offset)
    assert [m.value for m in messages] == [b"v0", b"v1", b"v2"]
    for m in messages:
        wf = f"kafka-{group}-{topic}-{m.partition}-{m.offset}"
        assert DBOS.retrieve_workflow(wf).get_result() is None
    assert len(DBOS.list_workflows(name="on_kafka")) == 3
