"""send/recv and events: delivery, checkpoints, timeouts, wake-ups and shutdown (both backends)."""

from __future__ import annotations

import asyncio
import pickle
import queue
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import (
    DBOS,
    DBOSAwaitedWorkflowCancelledError,
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSRuntimeShutdownError,
    SetWorkflowID,
)
from spindle.diagnostics import EventType, ThreadKind
from spindle.runtime._messaging_db import NULL_TOPIC, message_uuid
from spindle.runtime._notifications import PostgresListener, event_key, message_key
from spindle.runtime._schema import notifications
from tests.conftest import MakeDBOS

WAIT = 10.0  # seconds a test waits for something that should take milliseconds

received: queue.Queue[Any] = queue.Queue()


def _drain() -> None:
    while not received.empty():
        received.get_nowait()


@pytest.fixture(autouse=True)
def _empty_queue() -> None:
    _drain()


@DBOS.workflow()
def receive_n(n: int, topic: str | None, timeout: float) -> list[Any]:
    out = []
    for _ in range(n):
        msg = DBOS.recv(topic, timeout_seconds=timeout)
        received.put(msg)
        out.append(msg)
    return out


@DBOS.workflow()
def send_all(destination: str, messages: list[Any], topic: str | None) -> None:
    for m in messages:
        DBOS.send(destination, m, topic)


@DBOS.workflow()
def publish(key: str, values: list[Any]) -> None:
    for v in values:
        DBOS.set_event(key, v)


@DBOS.workflow()
def await_event(workflow_id: str, key: str, timeout: float) -> Any:
    value = DBOS.get_event(workflow_id, key, timeout_seconds=timeout)
    received.put(value)
    return value


@DBOS.workflow()
def recv_then_send_back(topic: str) -> Any:
    msg = DBOS.recv(topic, timeout_seconds=WAIT)
    DBOS.send(msg["reply_to"], msg["n"] + 1, "reply")
    return msg["n"]


@DBOS.workflow()
def asker(server: str) -> Any:
    DBOS.send(server, {"n": 41, "reply_to": DBOS.workflow_id}, "ask")
    return DBOS.recv("reply", timeout_seconds=WAIT)


@DBOS.workflow()
async def async_echo() -> Any:
    msg = await DBOS.recv_async("in", timeout_seconds=WAIT)
    await DBOS.set_event_async("echo", msg)
    await DBOS.send_async(msg["from"], msg["text"].upper(), "out")
    return msg["text"]


def _listener_waiters() -> Any:
    return DBOS.runtime.listener.waiters


def _parked(key: tuple[str, str, str]) -> None:
    assert _listener_waiters().wait_parked(key, WAIT), f"nobody waits on {key}"


def _notification_rows() -> int:
    with DBOS.runtime.sysdb.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(notifications)).scalar_one())


def _step_names(workflow_id: str) -> list[str]:
    steps = DBOS.runtime.sysdb.step_outputs(workflow_id)
    return [steps[k].function_name for k in sorted(steps)]


def test_messages_between_workflows_arrive_in_order_exactly_once(dbos: type[DBOS]) -> None:
    """A workflow's sends reach the receiver's topic in order; nothing is left behind."""
    rx = DBOS.start_workflow(receive_n, 4, "orders", WAIT)
    tx = DBOS.start_workflow(send_all, rx.workflow_id, ["a", {"b": 2}, 3, None], "orders")
    tx.get_result()
    assert rx.get_result() == ["a", {"b": 2}, 3, None]
    assert _notification_rows() == 0
    assert _step_names(tx.workflow_id) == ["DBOS.send"] * 4
    # The None message is a real message, not a timeout: no deadline had to be waited for
    # on every call, and no step recorded a timeout.
    assert _step_names(rx.workflow_id).count("DBOS.recv") == 4


def test_topics_are_separate_and_none_is_its_own_topic(dbos: type[DBOS]) -> None:
    """recv(topic) never takes a message of another topic; topic None is DBOS's null topic."""
    rx = DBOS.start_workflow(receive_n, 1, None, WAIT)
    DBOS.send(rx.workflow_id, "for-x", "x")
    DBOS.send(rx.workflow_id, "untopical")
    assert rx.get_result() == ["untopical"]
    with DBOS.runtime.sysdb.engine.connect() as conn:
        topics = conn.execute(sa.select(notifications.c.topic)).scalars().all()
    assert topics == ["x"]
    assert NULL_TOPIC not in topics


def test_a_waiting_receiver_is_woken_without_waiting_a_poll(make_dbos: MakeDBOS) -> None:
    """With a 30 s polling interval, a send still wakes the parked receiver at once
    (SQLite: the in-process wake-up; PostgreSQL: LISTEN/NOTIFY)."""
    make_dbos(notification_polling_interval_sec=30.0).launch()
    rx = DBOS.start_workflow(receive_n, 1, "t", 60.0)
    _parked(message_key(rx.workflow_id, "t"))
    DBOS.send(rx.workflow_id, "ping", "t")
    assert received.get(timeout=WAIT) == "ping"
    assert rx.get_result() == ["ping"]


def test_request_reply_between_two_workflows(dbos: type[DBOS]) -> None:
    """Two workflows talk both ways: one recv wakes the other's send."""
    server = DBOS.start_workflow(recv_then_send_back, "ask")
    assert DBOS.start_workflow(asker, server.workflow_id).get_result() == 42
    assert server.get_result() == 41


def test_events_between_workflows(dbos: type[DBOS]) -> None:
    """get_event waits for set_event; the latest value wins; outside a workflow it works too."""
    # get_event may wait on a workflow that does not exist yet.
    waiter = DBOS.start_workflow(await_event, "publisher-1", "status", WAIT)
    _parked(event_key("publisher-1", "status"))
    with SetWorkflowID("publisher-1"):
        DBOS.start_workflow(publish, "status", ["ready"]).get_result()
    assert waiter.get_result() == "ready"
    assert _step_names(waiter.workflow_id) == ["DBOS.getEvent", "DBOS.sleep"]

    pub = DBOS.start_workflow(publish, "progress", [10, 50, 100])
    pub.get_result()
    assert DBOS.get_event(pub.workflow_id, "progress", timeout_seconds=0) == 100
    assert _step_names(pub.workflow_id) == ["DBOS.setEvent"] * 3


def test_timeouts_return_none_and_are_recorded(dbos: type[DBOS]) -> None:
    """recv and get_event return None after their timeout; the None is checkpointed."""
    rx = DBOS.start_workflow(receive_n, 1, "silence", 0.2)
    assert rx.get_result() == [None]
    assert _step_names(rx.workflow_id) == ["DBOS.recv", "DBOS.sleep"]

    ev = DBOS.start_workflow(await_event, rx.workflow_id, "never", 0.2)
    assert ev.get_result() is None
    assert DBOS.get_event(rx.workflow_id, "never", timeout_seconds=0.1) is None


def test_replay_returns_recorded_values_without_waiting_or_resending(
    dbos: type[DBOS],
) -> None:
    """A re-executed workflow gets its recv/get_event values from its checkpoints (the
    messages are gone, the 60 s timeouts are not waited) and sends nothing twice."""
    rt = DBOS.runtime
    with SetWorkflowID("replay-rx"):
        rx = DBOS.start_workflow(receive_n, 2, "t", 60.0)
    with SetWorkflowID("replay-tx"):
        DBOS.start_workflow(send_all, "replay-rx", ["one", "two"], "t").get_result()
    assert rx.get_result() == ["one", "two"]
    with SetWorkflowID("replay-ev"):
        assert DBOS.start_workflow(await_event, "replay-tx", "none", 0.1).get_result() is None
    assert _notification_rows() == 0
    _drain()

    # Pretend the three crashed after their last checkpoint, and recover them.
    ids = ["replay-rx", "replay-tx", "replay-ev"]
    with rt.sysdb.engine.begin() as conn:
        from spindle.runtime._schema import workflow_status as ws
        from spindle.runtime._workflows import recover_pending

        conn.execute(ws.update().where(ws.c.workflow_uuid.in_(ids)).values(status="PENDING"))
    handles = recover_pending(rt, [rt.config.executor_id])
    assert sorted(h.workflow_id for h in handles) == sorted(ids)
    assert received.get(timeout=WAIT) == "one"
    assert received.get(timeout=WAIT) == "two"
    assert [DBOS.retrieve_workflow(i).get_result() for i in ids] == [["one", "two"], None, None]
    assert _notification_rows() == 0, "a replayed send sent again"


def test_send_to_a_missing_workflow_raises_and_writes_nothing(dbos: type[DBOS]) -> None:
    """DBOSNonExistentWorkflowError, from outside and from inside a workflow."""
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.send("no-such-workflow", "hello")
    handle = DBOS.start_workflow(send_all, "no-such-workflow", ["x"], None)
    with pytest.raises(DBOSNonExistentWorkflowError):
        handle.get_result()
    assert _notification_rows() == 0
    assert _step_names(handle.workflow_id) == []


def test_recv_and_set_event_need_a_workflow(dbos: type[DBOS]) -> None:
    """As in DBOS: recv and set_event outside a workflow are errors."""
    with pytest.raises(DBOSException, match="within a workflow"):
        DBOS.recv("t", timeout_seconds=0)
    with pytest.raises(DBOSException, match="within a workflow"):
        DBOS.set_event("k", "v")


def test_cancel_cuts_a_waiting_recv_short(dbos: type[DBOS]) -> None:
    """A recv parked for 60 s ends at once when its workflow is cancelled."""
    rx = DBOS.start_workflow(receive_n, 1, "t", 60.0)
    _parked(message_key(rx.workflow_id, "t"))
    DBOS.cancel_workflow(rx.workflow_id)
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        rx.get_result()
    status = DBOS.get_workflow_status(rx.workflow_id)
    assert status is not None
    assert status.status == "CANCELLED"


@pytest.mark.parametrize("how", ["cancel", "interrupt"])
def test_a_stop_landing_just_before_the_wait_is_not_lost(
    dbos: type[DBOS], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A cancel or a shutdown interrupt between recv's boundary check and its wake-callback
    registration still ends the wait at once: the body exits, it does not sit out its 60 s
    timeout. (An interrupt leaves the row PENDING, so only the wake-up can tell.)"""
    rt = DBOS.runtime
    waiters = rt.listener.waiters
    register = waiters.register

    def stop_then_register(key: Any, loop: Any = None) -> Any:
        # The worst moment: after the boundary check, before the wake callback exists.
        if how == "cancel":
            DBOS.cancel_workflow(key[1])
        else:
            entry = rt.active.get(key[1])
            assert entry is not None
            entry.interrupt()
        return register(key, loop)

    monkeypatch.setattr(waiters, "register", stop_then_register)
    rx = DBOS.start_workflow(receive_n, 1, "t", 60.0)
    # Bounded first: get_result() alone would also pass after the 60 s timeout.
    assert rt.active.idle.wait(WAIT), "the stopped recv is still waiting"
    with pytest.raises(DBOSAwaitedWorkflowCancelledError if how == "cancel" else DBOSException):
        rx.get_result()


def test_a_stopped_listener_interrupts_a_parked_recv_without_failing_it(
    dbos: type[DBOS],
) -> None:
    """If the listener stops under a parked recv, the workflow is interrupted, never failed:
    it stays PENDING for recovery."""
    rt = DBOS.runtime
    rx = DBOS.start_workflow(receive_n, 1, "t", 60.0)
    _parked(message_key(rx.workflow_id, "t"))
    assert rt.listener.thread is not None
    rt.listener.thread.stop.set()
    assert rt.active.idle.wait(WAIT), "the recv did not notice the listener stopped"
    with pytest.raises(DBOSRuntimeShutdownError):
        rx.get_result()
    status = DBOS.get_workflow_status(rx.workflow_id)
    assert status is not None
    assert status.status == "PENDING"


def test_destroy_ends_parked_waits_and_keeps_the_workflow_pending(make_dbos: MakeDBOS) -> None:
    """destroy() with a recv and an outside get_event parked: both end, no thread leaks,
    the workflow stays PENDING for recovery."""
    make_dbos(notification_polling_interval_sec=30.0).launch()
    rx = DBOS.start_workflow(receive_n, 1, "t", 60.0)
    _parked(message_key(rx.workflow_id, "t"))
    outside: queue.Queue[BaseException | Any] = queue.Queue()

    def get_outside() -> None:
        try:
            outside.put(DBOS.get_event(rx.workflow_id, "never", timeout_seconds=60))
        except BaseException as exc:
            outside.put(exc)

    t = threading.Thread(target=get_outside, name="test-get-event")
    t.start()
    _parked(event_key(rx.workflow_id, "never"))
    DBOS.destroy()
    t.join(WAIT)
    assert not t.is_alive()
    assert isinstance(outside.get_nowait(), DBOSException)
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []
    DBOS.launch()
    assert DBOS.get_workflow_status(rx.workflow_id) is not None


def test_destroy_with_an_idle_listener_is_fast(make_dbos: MakeDBOS) -> None:
    """With a 30 s polling interval the listener still stops at once: phases 6 and 8 and
    its join take well under a second (from the timeline, not a stopwatch)."""
    make_dbos(notification_polling_interval_sec=30.0).launch()
    DBOS.destroy()
    timeline = DBOS.last_shutdown_timeline
    assert timeline is not None
    assert timeline.violations == []
    phases = {p.name: p for p in timeline.phases}
    stop_phase, interrupt_phase = phases["stop_notification_listener"], phases["interrupt_db"]
    assert stop_phase.end_mono is not None
    assert interrupt_phase.end_mono is not None
    kind = ThreadKind.NOTIFICATION_LISTENER
    events = [e for e in timeline.events if e.kind is kind]
    (exit_event,) = [e for e in events if e.type is EventType.EXIT]
    (join_event,) = [e for e in events if e.type is EventType.JOIN]
    assert join_event.attrs["outcome"] == "joined"
    total = (
        (stop_phase.end_mono - stop_phase.start_mono)
        + (interrupt_phase.end_mono - interrupt_phase.start_mono)
        + join_event.attrs["duration"]
    )
    assert total < 1.0
    # It exited because phase 6 signalled it, well before any polling interval.
    assert exit_event.mono - stop_phase.start_mono < 1.0


def test_launch_returns_with_the_listener_listening(make_dbos: MakeDBOS) -> None:
    """The listener is a registered NOTIFICATION_LISTENER thread, ready when launch returns."""
    make_dbos().launch()
    listener = DBOS.runtime.listener
    assert listener._ready.is_set()
    if isinstance(listener, PostgresListener):
        # Ready means LISTEN ran on a live connection, not merely "first attempt over".
        assert listener.connections == 1
        assert listener.faults == 0
        assert listener.backend_pid is not None
    (info,) = [
        t
        for t in DBOS.thread_registry.snapshot().threads
        if t.kind is ThreadKind.NOTIFICATION_LISTENER
    ]
    assert info.name == "dbos-notification-listener"
    assert info.status_note in ("listening", "polling every 1s")


def test_async_variants(dbos: type[DBOS]) -> None:
    """send_async / recv_async / set_event_async / get_event_async, on the background loop
    and from the caller's own loop."""

    async def main() -> tuple[Any, Any]:
        handle = await DBOS.start_workflow_async(receive_n, 1, "out", WAIT)
        echo = DBOS.start_workflow(async_echo)
        await DBOS.send_async(echo.workflow_id, {"from": handle.workflow_id, "text": "hi"}, "in")
        event = await DBOS.get_event_async(echo.workflow_id, "echo", timeout_seconds=WAIT)
        return event, await handle.get_result()

    event, replies = asyncio.run(main())
    assert event == {"from": event["from"], "text": "hi"}
    assert replies == ["HI"]


def test_message_uuids_sort_in_creation_order() -> None:
    """The IDs Spindle writes are time-ordered as text: they break created_at ties FIFO."""
    ids = [message_uuid() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_a_row_written_by_another_writer_wakes_the_receiver(make_dbos: MakeDBOS) -> None:
    """A message inserted by another process (here: a separate engine, no in-process
    wake-up) reaches a parked receiver: PostgreSQL through the trigger's NOTIFY, SQLite
    through the polling thread."""
    make_dbos(notification_polling_interval_sec=0.05).launch()
    rx = DBOS.start_workflow(receive_n, 1, "t", 60.0)
    _parked(message_key(rx.workflow_id, "t"))
    rt = DBOS.runtime
    other = sa.create_engine(rt.sysdb.engine.url).execution_options(
        schema_translate_map=rt.sysdb.engine.get_execution_options().get("schema_translate_map")
    )
    try:
        with other.begin() as conn:
            conn.execute(
                notifications.insert().values(
                    destination_uuid=rx.workflow_id,
                    topic="t",
                    message=pickle.dumps("from-outside"),
                    created_at_epoch_ms=0,
                    message_uuid=message_uuid(),
                )
            )
    finally:
        other.dispose()
    assert received.get(timeout=WAIT) == "from-outside"
