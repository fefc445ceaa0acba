"""The SQL of send/recv and workflow events, behind the system database's close gate.

Kept apart from ``_sysdb.py`` so messaging owns its queries. Every write that belongs to a
workflow step is done in ONE transaction with the step's checkpoint, so a crash leaves
either both or neither:

* ``send``: the checkpoint row and the message row;
* ``recv``: the deletion of the message and the checkpoint holding it as the step's output;
* ``set_event``: the checkpoint and the upsert of the event.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ._db_retry import Retrier, retried
from ._errors import DBOSNonExistentWorkflowError
from ._rows import PENDING, now_ms
from ._schema import notifications as nt
from ._schema import operation_outputs as oo
from ._schema import workflow_events as we
from ._schema import workflow_status as ws
from ._serialization import as_bytes
from ._sysdb import SystemDatabase

#: What DBOS stores as the topic of a message sent with ``topic=None``.
NULL_TOPIC = "__null__topic__"

# PostgreSQL does each messaging transaction in ONE statement (data-modifying CTEs): one
# round trip and the commit, instead of four. Under CPU contention every round trip is a
# chance to be descheduled, so this is what keeps the tail latency down.
_PENDING = "SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = :wf AND status = 'PENDING'"

_PG_SEND_CHECKPOINTED = sa.text(f"""
WITH cp AS (
    INSERT INTO dbos.operation_outputs
        (workflow_uuid, function_id, function_name, output, error, completed_at)
    SELECT :wf, :fid, :step, NULL, NULL, :now WHERE EXISTS ({_PENDING})
    RETURNING 1
)
INSERT INTO dbos.notifications
    (destination_uuid, topic, message, created_at_epoch_ms, message_uuid, serialization)
SELECT :dest, :topic, :msg, :now, :uuid, :ser WHERE EXISTS (SELECT 1 FROM cp)
RETURNING 1
""")

# The pending check is inside the DELETE: a cancelled workflow takes no message (a
# data-modifying CTE runs even when nothing reads its rows).
_PG_CONSUME = sa.text(f"""
WITH pending AS ({_PENDING}),
taken AS (
    DELETE FROM dbos.notifications
    WHERE message_uuid = (
            SELECT message_uuid FROM dbos.notifications
            WHERE destination_uuid = :wf AND topic = :topic
            ORDER BY created_at_epoch_ms, message_uuid
            LIMIT 1 FOR UPDATE SKIP LOCKED)
        AND EXISTS (SELECT 1 FROM pending)
    RETURNING message, serialization
),
recorded AS (
    INSERT INTO dbos.operation_outputs
        (workflow_uuid, function_id, function_name, output, error, completed_at, serialization)
    SELECT :wf, :fid, 'DBOS.recv', message, NULL, :now, serialization FROM taken
    RETURNING output, serialization
)
SELECT EXISTS (SELECT 1 FROM pending), (SELECT output FROM recorded),
    (SELECT serialization FROM recorded)
""")


def _is_foreign_key_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    return type(orig).__name__ == "ForeignKeyViolation" or "FOREIGN KEY" in str(orig)


Outcome = Literal["recorded", "not-pending", "conflict"]

_uuid_lock = threading.Lock()
_uuid_last = [0, 0]  # [epoch ms, counter]: monotonic within this process


def message_uuid() -> str:
    """A UUIDv7-style ID: 48-bit epoch ms, then a per-process counter, then random bits.

    Time-ordered as text, so ``ORDER BY created_at_epoch_ms, message_uuid`` is FIFO for the
    messages one process sends in the same millisecond.
    """
    with _uuid_lock:
        ms = now_ms()
        if ms <= _uuid_last[0]:
            ms = _uuid_last[0]
            _uuid_last[1] += 1
        else:
            _uuid_last[0], _uuid_last[1] = ms, 0
        counter = _uuid_last[1] & 0xFFF
        if _uuid_last[1] > 0xFFF:
            # 4096 IDs in one millisecond: borrow the next millisecond to stay ordered.
            _uuid_last[0], _uuid_last[1], ms, counter = ms + 1, 0, ms + 1, 0
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


@dataclass(frozen=True, slots=True)
class Received:
    """What one attempt to consume a message found."""

    outcome: Outcome | Literal["empty"]
    message: bytes | None = None
    #: The message's format (None: native pickle).
    serialization: str | None = None


class MessagingDatabase:
    """Queries of the ``notifications`` and ``workflow_events`` tables."""

    def __init__(self, sysdb: SystemDatabase) -> None:
        self._sysdb = sysdb
        self.sqlite = sysdb.sqlite

    @property
    def retrier(self) -> Retrier:
        """The system database's retry of transient errors (:mod:`._db_retry`)."""
        return self._sysdb.retrier

    # -- checkpoints ---------------------------------------------------------------------

    @staticmethod
    def _checkpoint(
        conn: Connection,
        workflow_id: str,
        function_id: int,
        name: str,
        output: bytes | None,
        serialization: str | None = None,
    ) -> bool:
        """Insert a step checkpoint while the workflow is PENDING; False if it was not.

        Raises IntegrityError when the step is already recorded (another execution).
        """
        pending = sa.exists().where(ws.c.workflow_uuid == workflow_id, ws.c.status == PENDING)
        values = {
            "workflow_uuid": workflow_id,
            "function_id": function_id,
            "function_name": name,
            "output": output,
            "error": None,
            "completed_at": now_ms(),
            "serialization": serialization,
        }
        # Each value typed as its column (a literal NULL has no type PostgreSQL can infer).
        source = sa.select(*(sa.literal(v, oo.c[k].type) for k, v in values.items()))
        stmt = (
            oo.insert()
            .from_select([oo.c[k] for k in values], source.where(pending))
            .returning(oo.c.function_id)
        )
        # RETURNING, not rowcount: psycopg reports -1 for INSERT ... SELECT.
        return len(conn.execute(stmt).all()) == 1

    # -- messages ------------------------------------------------------------------------

    def send(
        self,
        destination_id: str,
        topic: str,
        message: bytes,
        *,
        workflow_id: str | None = None,
        function_id: int | None = None,
        step_name: str = "DBOS.send",
        serialization: str | None = None,
    ) -> Outcome:
        """Insert a message (and the sender's checkpoint, when sent from a workflow).

        Raises :class:`DBOSNonExistentWorkflowError` when the destination does not exist;
        then nothing is written.
        """
        row = {
            "destination_uuid": destination_id,
            "topic": topic,
            "message": message,
            "created_at_epoch_ms": now_ms(),
            "message_uuid": message_uuid(),
            "serialization": serialization,
        }
        # The row (and its ID) is made once: a retry of a send whose commit did land then
        # conflicts on the ID instead of sending the message twice.
        return self._send_row(row, destination_id, workflow_id, function_id, step_name)

    @retried
    def _send_row(
        self,
        row: dict[str, Any],
        destination_id: str,
        workflow_id: str | None,
        function_id: int | None,
        step_name: str,
    ) -> Outcome:
        topic, message = row["topic"], row["message"]
        try:
            with self._sysdb.transaction() as conn:
                if workflow_id is None or function_id is None:
                    # The foreign key is the existence check: one statement.
                    conn.execute(nt.insert().values(**row))
                elif not self.sqlite:
                    params = {
                        "wf": workflow_id,
                        "fid": function_id,
                        "step": step_name,
                        "now": row["created_at_epoch_ms"],
                        "dest": destination_id,
                        "topic": topic,
                        "msg": message,
                        "uuid": row["message_uuid"],
                        "ser": row["serialization"],
                    }
                    if conn.execute(_PG_SEND_CHECKPOINTED, params).first() is None:
                        return "not-pending"
                else:
                    if not self._checkpoint(conn, workflow_id, function_id, step_name, None):
                        return "not-pending"  # nothing written yet: the commit is empty
                    conn.execute(nt.insert().values(**row))
        except IntegrityError as exc:
            if _is_foreign_key_violation(exc):
                raise DBOSNonExistentWorkflowError(destination_id) from exc
            if workflow_id is None or function_id is None:
                return "recorded"  # our own message ID: an earlier attempt's commit landed
            return "conflict"
        return "recorded"

    @retried
    def consume(self, workflow_id: str, function_id: int, topic: str) -> Received:
        """Take the oldest message on ``topic`` and record it as the recv step's output.

        Both in one transaction: a crash never loses a taken message nor delivers it twice.
        """
        if not self.sqlite:
            params = {"wf": workflow_id, "fid": function_id, "topic": topic, "now": now_ms()}
            try:
                with self._sysdb.transaction() as conn:
                    pending, output, fmt = conn.execute(_PG_CONSUME, params).one()
            except IntegrityError:
                return Received("conflict")  # rolled back: the message stays
            if not pending:
                return Received("not-pending")
            if output is None:
                return Received("empty")
            return Received("recorded", as_bytes(output), fmt)

        # SQLite: BEGIN IMMEDIATE serialises writers, so read-then-delete is safe.
        pick = (
            sa.select(nt.c.message_uuid, nt.c.message, nt.c.serialization)
            .where(nt.c.destination_uuid == workflow_id, nt.c.topic == topic)
            .order_by(nt.c.created_at_epoch_ms, nt.c.message_uuid)
            .limit(1)
        )

        class _NotPending(Exception):
            pass

        try:
            with self._sysdb.transaction() as conn:
                row = conn.execute(pick).first()
                if row is None:
                    return Received("empty")
                conn.execute(nt.delete().where(nt.c.message_uuid == row.message_uuid))
                message = as_bytes(row.message)  # text when plain SQL wrote it (see as_bytes)
                if not self._checkpoint(
                    conn, workflow_id, function_id, "DBOS.recv", message, row.serialization
                ):
                    raise _NotPending  # rolls the deletion back: the message stays
        except _NotPending:
            return Received("not-pending")
        except IntegrityError:
            return Received("conflict")
        return Received("recorded", message, row.serialization)

    @retried
    def peek(self, destination_id: str, topic: str) -> bool:
        """True when a message waits for ``destination_id`` on ``topic``."""
        with self._sysdb.transaction(read=True) as conn:
            row = conn.execute(
                sa.select(sa.literal(1))
                .where(nt.c.destination_uuid == destination_id, nt.c.topic == topic)
                .limit(1)
            ).first()
        return row is not None

    # -- events --------------------------------------------------------------------------

    @retried
    def set_event(
        self,
        workflow_id: str,
        key: str,
        value: bytes,
        *,
        function_id: int | None,
        serialization: str | None = None,
    ) -> Outcome:
        """Upsert an event of ``workflow_id`` (``serialization``: the value's format), with
        its checkpoint in the same transaction."""
        insert = self._sysdb.dialect_insert(we)
        insert = insert.values(
            workflow_uuid=workflow_id, key=key, value=value, serialization=serialization
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[we.c.workflow_uuid, we.c.key],
            set_={"value": insert.excluded.value, "serialization": insert.excluded.serialization},
        )

        class _NotPending(Exception):
            pass

        try:
            with self._sysdb.transaction() as conn:
                if function_id is not None and not self._checkpoint(
                    conn, workflow_id, function_id, "DBOS.setEvent", None
                ):
                    raise _NotPending
                conn.execute(upsert)
        except _NotPending:
            return "not-pending"
        except IntegrityError:
            return "conflict"
        return "recorded"

    @retried
    def get_event(self, workflow_id: str, key: str) -> tuple[bytes, str | None] | None:
        """The serialized value of an event and its format, or None when it is not set."""
        with self._sysdb.transaction(read=True) as conn:
            row = conn.execute(
                sa.select(we.c.value, we.c.serialization).where(
                    we.c.workflow_uuid == workflow_id, we.c.key == key
                )
            ).first()
        return None if row is None else (as_bytes(row[0]), row[1])

    # -- polling (SQLite) ------------------------------------------------------------------

    @retried
    def ready_keys(
        self, message_keys: Iterable[tuple[str, str]], event_keys: Iterable[tuple[str, str]]
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Of the keys waited on, those with a message (or an event value) in the table now.

        One query per table, filtered on the waited workflow IDs: the cost follows the
        number of waiters, not the size of the tables.
        """
        msg_keys, evt_keys = set(message_keys), set(event_keys)
        found_msgs: set[tuple[str, str]] = set()
        found_evts: set[tuple[str, str]] = set()
        with self._sysdb.transaction(read=True) as conn:
            if msg_keys:
                dests = sorted({d for d, _ in msg_keys})
                rows = conn.execute(
                    sa.select(nt.c.destination_uuid, nt.c.topic)
                    .where(nt.c.destination_uuid.in_(dests))
                    .distinct()
                )
                found_msgs = {(r[0], r[1]) for r in rows} & msg_keys
            if evt_keys:
                wfs = sorted({w for w, _ in evt_keys})
                rows = conn.execute(
                    sa.select(we.c.workflow_uuid, we.c.key).where(we.c.workflow_uuid.in_(wfs))
                )
                found_evts = {(r[0], r[1]) for r in rows} & evt_keys
        return found_msgs, found_evts


#: For ``_bulk_send``, which writes many messages (and one checkpoint) in one transaction.
is_foreign_key_violation = _is_foreign_key_violation
checkpoint = MessagingDatabase._checkpoint
