"""waiting_on(): what a thread is blocked on, from real stacks and from py-spy-like frames."""

from __future__ import annotations

import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle.diagnostics import WAITING_ON_VALUES, capture_stack, waiting_on

WaitUntil = Callable[[Callable[[], bool]], None]


class Blocked:
    """A thread running ``body`` until the test's ``release`` lets it go."""

    def __init__(self, body: Callable[[threading.Event], None]) -> None:
        self.release = threading.Event()
        self.thread = threading.Thread(target=body, args=(self.release,), daemon=True)
        self.thread.start()

    def waiting_on(self) -> str:
        assert self.thread.ident is not None
        frames = capture_stack(self.thread.ident)
        return waiting_on(frames or [])


@pytest.fixture
def blocked() -> Iterator[Callable[[Callable[[threading.Event], None]], Blocked]]:
    """Start threads that block; release and join them all at the end."""
    made: list[Blocked] = []

    def start(body: Callable[[threading.Event], None]) -> Blocked:
        b = Blocked(body)
        made.append(b)
        return b

    yield start
    for b in made:
        b.release.set()
    for b in made:
        b.thread.join(10)


def wait_release(release: threading.Event) -> None:
    """Block on the release event."""
    release.wait()


Start = Callable[[Callable[[threading.Event], None]], Blocked]


def test_event_wait(blocked: Start, wait_until: WaitUntil) -> None:
    b = blocked(wait_release)
    wait_until(lambda: b.waiting_on() == "event")


def test_condition_wait(blocked: Start, wait_until: WaitUntil) -> None:
    cond = threading.Condition()

    def body(release: threading.Event) -> None:
        with cond:
            cond.wait_for(release.is_set)

    b = blocked(body)
    wait_until(lambda: b.waiting_on() == "condition")
    with cond:
        b.release.set()
        cond.notify_all()


def test_queue_get(blocked: Start, wait_until: WaitUntil) -> None:
    q: queue.Queue[int] = queue.Queue()

    def body(release: threading.Event) -> None:
        q.get()

    b = blocked(body)
    wait_until(lambda: b.waiting_on() == "queue")
    q.put(1)


def test_lock_acquire(blocked: Start, wait_until: WaitUntil) -> None:
    lock = threading.Lock()
    lock.acquire()

    def body(release: threading.Event) -> None:
        lock.acquire()
        lock.release()

    b = blocked(body)
    wait_until(lambda: b.waiting_on() == "lock")
    lock.release()


def test_thread_join(blocked: Start, wait_until: WaitUntil) -> None:
    inner = blocked(wait_release)
    outer = blocked(lambda release: inner.thread.join())
    wait_until(lambda: outer.waiting_on() == "join")
    inner.release.set()


def test_time_sleep(blocked: Start, wait_until: WaitUntil) -> None:
    # The thread under observation sleeps on purpose: time.sleep is the thing detected.
    def body(release: threading.Event) -> None:
        while not release.is_set():
            time.sleep(0.05)

    b = blocked(body)
    wait_until(lambda: b.waiting_on() == "sleep")


def test_socket_read(blocked: Start, wait_until: WaitUntil) -> None:
    a, c = socket.socketpair()
    reader = a.makefile("rb")

    def body(release: threading.Event) -> None:
        reader.read(1)

    b = blocked(body)
    try:
        wait_until(lambda: b.waiting_on() == "socket")
    finally:
        c.sendall(b"x")
        b.thread.join(10)
        reader.close()
        a.close()
        c.close()


def test_selector_select(blocked: Start, wait_until: WaitUntil) -> None:
    import selectors

    a, c = socket.socketpair()
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ)

    def body(release: threading.Event) -> None:
        sel.select()

    b = blocked(body)
    try:
        wait_until(lambda: b.waiting_on() == "select")
    finally:
        c.sendall(b"x")
        b.thread.join(10)
        sel.close()
        a.close()
        c.close()


def test_sqlite3_call_blocked_on_a_locked_database(
    blocked: Start, wait_until: WaitUntil, tmp_path: Path
) -> None:
    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("create table t (x int)")
    holder.execute("begin exclusive")

    def body(release: threading.Event) -> None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("insert into t values (1)")
        finally:
            conn.close()

    b = blocked(body)
    try:
        wait_until(lambda: b.waiting_on() == "db:sqlite3")
    finally:
        holder.execute("commit")
        b.thread.join(30)
        holder.close()


def test_running_thread_is_running() -> None:
    frames = capture_stack(threading.get_ident())
    assert frames is not None
    assert waiting_on(frames) == "running"
    assert waiting_on([]) == "running"


def _frame(filename: str, qualname: str, line: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "filename": filename,
        "lineno": 1,
        "function": qualname.rsplit(".", 1)[-1],
        "qualname": qualname,
        "line": line,
        **extra,
    }


STDLIB = str(Path(threading.__file__).parent)


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (
            [
                _frame("/app/worker.py", "run"),
                _frame(f"{STDLIB}/threading.py", "Event.wait"),
                _frame(f"{STDLIB}/threading.py", "Condition.wait"),
            ],
            "event",
        ),
        (
            [
                _frame("/app/worker.py", "run"),
                _frame("/venv/lib/site-packages/psycopg/connection.py", "Connection.wait"),
                _frame(f"{STDLIB}/selectors.py", "EpollSelector.select"),
            ],
            "db:psycopg",
        ),
        (
            [
                _frame("/app/worker.py", "run"),
                _frame(
                    "/venv/lib/site-packages/sqlalchemy/engine/default.py",
                    "DefaultDialect.do_execute",
                    "cursor.execute(statement, parameters)",
                ),
            ],
            "db",
        ),
        (
            [
                _frame("/app/worker.py", "run"),
                _frame(f"{STDLIB}/concurrent/futures/_base.py", "Future.result"),
                _frame(f"{STDLIB}/threading.py", "Condition.wait"),
            ],
            "future",
        ),
        (
            [_frame("/app/worker.py", "run"), _frame("libc.so.6", "epoll_wait", native=True)],
            "running",
        ),
        ([_frame("/app/worker.py", "loop", "x += 1")], "running"),
    ],
)
def test_waiting_on_from_frame_models(frames: list[dict[str, Any]], expected: str) -> None:
    """The frame model py-spy output is parsed into classifies the same way."""
    assert waiting_on(frames) == expected
    assert expected in WAITING_ON_VALUES
