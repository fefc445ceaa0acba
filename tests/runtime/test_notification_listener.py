"""The notification listener's faults: its connection terminated mid-test (PostgreSQL)."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import DBOS
from spindle.diagnostics import ThreadKind
from spindle.runtime._notifications import PostgresListener, message_key
from tests.conftest import PG_BASE, MakeDBOS

WAIT = 10.0
received: queue.Queue[Any] = queue.Queue()


@DBOS.workflow()
def listener_receiver(n: int) -> list[Any]:
    out = []
    for _ in range(n):
        msg = DBOS.recv("t", timeout_seconds=60)
        received.put(msg)
        out.append(msg)
    return out


def _listener_note() -> str | None:
    (info,) = [
        t
        for t in DBOS.thread_registry.snapshot().threads
        if t.kind is ThreadKind.NOTIFICATION_LISTENER
    ]
    return info.status_note


@pytest.mark.postgres_only
def test_listener_reconnects_and_loses_no_message(
    make_dbos: MakeDBOS, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """pg_terminate_backend on the LISTEN connection: the thread records the fault
    ("reconnecting", a warning), reconnects, and a message sent while it was down reaches
    the parked receiver (whose 60 s timeout is not what delivers it)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite polls")
    make_dbos().launch()
    listener = DBOS.runtime.listener
    assert isinstance(listener, PostgresListener)
    old_pid = listener.backend_pid
    assert old_pid is not None

    # Hold the listener between fault and reconnection, so the send below happens while it
    # is certainly disconnected (its NOTIFY is lost: only the re-check can deliver it).
    down, release = threading.Event(), threading.Event()
    notes: list[str | None] = []

    def hold() -> None:
        notes.append(_listener_note())
        down.set()
        release.wait(WAIT)

    listener.before_reconnect = hold
    rx = DBOS.start_workflow(listener_receiver, 2)
    assert listener.waiters.wait_parked(message_key(rx.workflow_id, "t"), WAIT)

    admin = sa.create_engine(PG_BASE.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with caplog.at_level(logging.WARNING, logger="spindle"), admin.connect() as conn:
            assert conn.execute(sa.select(sa.func.pg_terminate_backend(old_pid))).scalar()
            try:
                assert down.wait(WAIT), "the listener did not notice its connection died"
                DBOS.send(rx.workflow_id, "during-outage", "t")
            finally:
                release.set()
    finally:
        admin.dispose()

    assert received.get(timeout=WAIT) == "during-outage"
    assert listener.wait_connected(2, WAIT)
    assert notes == ["reconnecting"]
    assert any("notification listener lost its connection" in r.message for r in caplog.records)
    assert listener.faults == 1
    assert listener.backend_pid not in (None, old_pid)
    assert _listener_note() == "listening"

    # Listening again: the next message wakes the receiver through NOTIFY.
    DBOS.send(rx.workflow_id, "after", "t")
    assert received.get(timeout=WAIT) == "after"
    assert rx.get_result() == ["during-outage", "after"]


@pytest.mark.postgres_only
def test_closing_its_connection_ends_a_blocked_listener(make_dbos: MakeDBOS, db_url: str) -> None:
    """Phase 8's tool on its own: _cleanup_connections() ends the listener's blocking wait
    even though its stop event was never set, and it does not reconnect."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's poller holds no connection of its own")
    make_dbos().launch()
    listener = DBOS.runtime.listener
    assert isinstance(listener, PostgresListener)
    assert listener.thread is not None
    assert not listener.thread.stop.is_set()
    listener._cleanup_connections()
    listener.thread.thread.join(WAIT)
    assert not listener.thread.thread.is_alive()
    assert listener.connections == 1
    assert listener.faults == 0, "a shutdown close is not a fault"
    assert listener.waiters.closed
