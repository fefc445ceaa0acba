"""A Kafka :class:`EventSource` on confluent-kafka (the optional extra ``spindle[kafka]``)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import DBOSException
from ._pollers import Event

logger = logging.getLogger("spindle")

_MISSING = (
    "@DBOS.kafka_consumer needs confluent-kafka: install the extra with "
    "`pip install 'spindle[kafka]'`"
)


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    """A consumed Kafka message, as DBOS passes it to a ``@DBOS.kafka_consumer`` workflow."""

    headers: list[tuple[str, str | bytes]] | None
    key: str | bytes | None
    latency: float | None
    leader_epoch: int | None
    offset: int | None
    partition: int | None
    timestamp: tuple[int, int]
    topic: str | None
    value: str | bytes | None


def import_confluent_kafka() -> Any:
    """The ``confluent_kafka`` module, or a clear error naming the extra to install."""
    try:
        import confluent_kafka
    except ImportError as exc:
        raise DBOSException(_MISSING) from exc
    return confluent_kafka


def safe_group_id(workflow_name: str, topics: Sequence[str]) -> str:
    """The consumer group DBOS derives when the config names none."""
    parts = (re.sub(r"[^a-zA-Z0-9\-]", "", p) for p in [workflow_name, *topics])
    return f"dbos-kafka-group-{'-'.join(parts)}"[:255]


class KafkaSource:
    """Consumes ``topics`` with a consumer made at the first poll of each launch.

    Offsets are committed (synchronously) only after the messages' workflows were started,
    so a crash redelivers them and their IDs (``kafka-<group>-<topic>-<partition>-<offset>``)
    start nothing twice.
    """

    def __init__(self, config: dict[str, Any], topics: Sequence[str], workflow_name: str):
        if not topics:
            raise ValueError("kafka_consumer needs at least one topic")
        self._kafka = import_confluent_kafka()
        self._config = dict(config)
        self._config.setdefault("group.id", safe_group_id(workflow_name, topics))
        self._config.setdefault("auto.offset.reset", "earliest")
        # We commit after the workflows start, never on a timer.
        self._config["enable.auto.commit"] = False
        self._topics = list(topics)
        self._lock = threading.Lock()
        self._consumer: Any = None
        self.group_id: str = str(self._config["group.id"])

    @property
    def name(self) -> str:
        """``kafka-<group id>``: the prefix of the workflow IDs."""
        return f"kafka-{self.group_id}"

    def _ensure(self) -> Any:
        with self._lock:
            if self._consumer is None:
                self._consumer = self._kafka.Consumer(self._config)
                self._consumer.subscribe(self._topics)
            return self._consumer

    def poll(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` for messages; errors are logged, fatal ones raised."""
        consumer = self._ensure()
        out: list[Event] = []
        for msg in consumer.consume(num_messages=100, timeout=timeout):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise self._kafka.KafkaException(err)
                logger.warning("spindle: kafka error %s", err)
                continue
            message = KafkaMessage(
                headers=msg.headers(),
                key=msg.key(),
                latency=msg.latency(),
                leader_epoch=msg.leader_epoch(),
                offset=msg.offset(),
                partition=msg.partition(),
                timestamp=msg.timestamp(),
                topic=msg.topic(),
                value=msg.value(),
            )
            out.append(Event(f"{message.topic}-{message.partition}-{message.offset}", message))
        return out

    def commit(self, events: Sequence[Event]) -> None:
        """Commit the offsets after the given messages."""
        if not events:
            return
        latest: dict[tuple[str, int], int] = {}
        for event in events:
            m: KafkaMessage = event.value
            if m.topic is None or m.partition is None or m.offset is None:
                continue
            key = (m.topic, m.partition)
            latest[key] = max(latest.get(key, -1), m.offset)
        offsets = [
            self._kafka.TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in latest.items()
        ]
        self._ensure().commit(offsets=offsets, asynchronous=False)

    def close(self) -> None:
        """Leave the group; the next launch makes a new consumer."""
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()
