"""What a thread is waiting on, read from the top frames of its stack.

A thread seen from another thread through ``sys._current_frames()`` (or by py-spy) is either
blocked in C code, with the GIL released, or was merely switched out. The innermost Python
frames tell which: ``Condition.wait`` under ``Event.wait`` is an event wait, a frame inside a
database driver is a database call, and so on. Anything not recognised is ``running``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The answers, stable strings: the dashboard and tests compare against them.
RUNNING = "running"
EVENT_WAIT = "event"
CONDITION_WAIT = "condition"
LOCK_ACQUIRE = "lock"
QUEUE_GET = "queue"
THREAD_JOIN = "join"
DB_SQLITE = "db:sqlite3"
DB_PSYCOPG = "db:psycopg"
DB_OTHER = "db"
#: Backing off between retries of a transient database error (the database is down).
DB_RETRY = "db:retry"
#: Waiting for a connection from a full pool.
DB_POOL = "db:pool"
SOCKET_READ = "socket"
SELECT = "select"
SLEEP = "sleep"
FUTURE_WAIT = "future"

#: Every value :func:`waiting_on` can return.
WAITING_ON_VALUES = (
    RUNNING,
    EVENT_WAIT,
    CONDITION_WAIT,
    LOCK_ACQUIRE,
    QUEUE_GET,
    THREAD_JOIN,
    DB_SQLITE,
    DB_PSYCOPG,
    DB_OTHER,
    DB_RETRY,
    DB_POOL,
    SOCKET_READ,
    SELECT,
    SLEEP,
    FUTURE_WAIT,
)

# How many innermost frames are looked at: deeper frames say what the thread is *for*, not
# what it is blocked on (a queue worker's run() is not a wait).
_DEPTH = 8


# The runtime modules whose lock waits are waits for SQLite's write turn.
_SQLITE_TURN_FILES = (
    "/spindle/runtime/_sysdb_gate.py",
    "/spindle/runtime/_sysdb_hot.py",
    "/spindle/runtime/_group_commit.py",
)


def _name(frame: Mapping[str, Any]) -> str:
    return str(frame.get("qualname") or frame.get("function") or "")


def _file(frame: Mapping[str, Any]) -> str:
    return str(frame.get("filename") or "").replace("\\", "/")


def _line(frame: Mapping[str, Any]) -> str:
    return str(frame.get("line") or "")


def _stdlib(frame: Mapping[str, Any], module: str) -> bool:
    path = _file(frame)
    return path.endswith("/" + module) and "site-packages" not in path


# The runtime module whose waits are backoffs between database retries (by path, as above).
_DB_RETRY_FILE = "/spindle/runtime/_db_retry.py"


def _classify_one(frame: Mapping[str, Any]) -> str | None:
    name = _name(frame)
    func = name.rsplit(".", 1)[-1]
    path = _file(frame)
    line = _line(frame)
    if path.endswith(_DB_RETRY_FILE):
        return DB_RETRY
    if "/sqlalchemy/pool/" in path or "/sqlalchemy/util/queue.py" in path:
        return DB_POOL
    if "/psycopg/" in path or "/psycopg_c/" in path or "/psycopg2/" in path:
        return DB_PSYCOPG
    if "/sqlite3/" in path and "site-packages" not in path:
        return DB_SQLITE
    if path.endswith(_SQLITE_TURN_FILES) and ".acquire(" in line:
        # Spindle's SQLite writers queue in-process for the one write lock (the group
        # commit's followers wait for their leader's commit): a database wait, not a lock
        # of the app's own. Known by path: diagnostics imports nothing of the runtime.
        return DB_SQLITE
    if _stdlib(frame, "threading.py"):
        # Event.wait's own line is ``self._cond.wait(timeout)``: that recognises it when a
        # frame model has no qualified name.
        if name == "Event.wait" or (func == "wait" and "_cond.wait" in line):
            return EVENT_WAIT
        if func in ("_wait_for_tstate_lock", "join"):
            return THREAD_JOIN
        if func in ("wait", "wait_for"):
            return CONDITION_WAIT
        if func == "acquire":
            return LOCK_ACQUIRE
        return None
    if _stdlib(frame, "queue.py") and func in ("get", "put"):
        return QUEUE_GET
    if _stdlib(frame, "selectors.py") and func == "select":
        return SELECT
    if (_stdlib(frame, "socket.py") or _stdlib(frame, "ssl.py")) and func in (
        "readinto",
        "read",
        "recv",
        "recv_into",
        "accept",
        "readline",
    ):
        return SOCKET_READ
    if "concurrent/futures/" in path and func in ("result", "wait", "as_completed"):
        return FUTURE_WAIT
    return None


def _classify_line(frame: Mapping[str, Any]) -> str | None:
    # The innermost Python frame of a thread blocked in C (time.sleep, lock.acquire(),
    # sqlite3's execute, select.select) is its caller: read the call off the source line.
    line = _line(frame)
    path = _file(frame)
    if "sleep(" in line:
        return SLEEP
    if ".acquire(" in line:
        return LOCK_ACQUIRE
    if "select.select(" in line or ".poll(" in line or "selector.select(" in line:
        return SELECT
    if ".recv(" in line or ".recv_into(" in line or ".accept(" in line:
        return SOCKET_READ
    if any(call in line for call in _DB_CALLS):
        if frame.get("db_driver") == "sqlite3" or "sqlite3." in line:
            return DB_SQLITE
        if "sqlalchemy/" in path or frame.get("db_driver"):
            return DB_OTHER
    return None


# DB-API calls that block in a C driver (sqlite3): the innermost Python frame makes them.
_DB_CALLS = (
    ".execute(",
    ".executemany(",
    ".executescript(",
    ".commit(",
    ".rollback(",
    ".fetchone(",
    ".fetchall(",
    ".fetchmany(",
)


def waiting_on(frames: Sequence[Mapping[str, Any]]) -> str:
    """What the thread whose stack this is waits on; frames are innermost *last*.

    One of :data:`WAITING_ON_VALUES`: ``event``, ``condition``, ``lock``, ``queue``,
    ``join``, ``db:sqlite3``, ``db:psycopg``, ``db``, ``db:retry`` (backing off while the
    database fails), ``db:pool`` (waiting for a connection), ``socket``, ``select``, ``sleep``,
    ``future``, or ``running`` when the top frames show no known blocking call.
    """
    # Native frames from py-spy --native are skipped: the Python frames name the wait.
    python_frames = [f for f in frames if not f.get("native")]
    if not python_frames:
        return RUNNING
    top = python_frames[-_DEPTH:]
    # A database driver anywhere in the top frames wins: a driver blocks on sockets and
    # conditions of its own, and "db" is the answer a human needs.
    for frame in reversed(top):
        path = _file(frame)
        if "/psycopg/" in path or "/psycopg_c/" in path or "/psycopg2/" in path:
            return DB_PSYCOPG
    # Walk outwards through the contiguous run of recognised library frames and keep the
    # outermost: Condition.wait under Queue.get is a queue wait, under Event.wait an event.
    found: str | None = None
    for i in range(len(top) - 1, -1, -1):
        here = _classify_one(top[i])
        if here is None:
            break
        found = here
    if found is not None:
        return found
    return _classify_line(top[-1]) or RUNNING
