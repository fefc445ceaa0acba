"""The fleet: Spindle's side of the conductor protocol, for every app process connected.

Each connection is an :class:`Executor`. The server asks it for ``executor_info`` on
connect, then for ``thread_dump`` and recent workflows every poll interval, and watches its
shutdown (``shutdown_report`` with ``watch``: the app answers at once with its last
timeline, and again as it stops, with the phases recorded so far). Management actions
(cancel, resume, fork) are requests whose replies the caller awaits. Everything runs on
the server's event loop; nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger("spindle")

#: Recent workflows asked of each executor per poll.
RECENT_WORKFLOWS = 8
#: Executors that left are kept (newest first) so their last shutdown stays on the page.
KEEP_GONE = 50


class Socket(Protocol):
    """What the fleet needs of a websocket: send one text frame."""

    async def send_text(self, data: str) -> None:
        """Send one text frame."""


class RequestFailed(Exception):
    """An executor answered a request with an error, or did not answer in time."""


@dataclass
class Executor:
    """One connected (or recently gone) app process, as the fleet page shows it."""

    session_id: str
    app: str
    connected_wall: float
    last_seen_wall: float
    socket: Socket | None
    executor_id: str | None = None
    application_version: str | None = None
    hostname: str | None = None
    pid: int | None = None
    runtime: str | None = None
    dbos_version: str | None = None
    disconnected_wall: float | None = None
    close_code: int | None = None
    threads: list[dict[str, Any]] = field(default_factory=list)
    workflows: list[dict[str, Any]] = field(default_factory=list)
    #: Shutdown reports, newest first: the app's last finished one, then the one it sent
    #: as it stopped (``in_progress``: the phases recorded when its conductor thread ended).
    shutdowns: list[dict[str, Any]] = field(default_factory=list)
    shut_down: bool = False
    pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    watch_id: str | None = None

    @property
    def connected(self) -> bool:
        """True while its websocket is open."""
        return self.socket is not None

    @property
    def state(self) -> str:
        """``connected``, ``shut down`` (it said so as it left) or ``disconnected``."""
        if self.connected:
            return "connected"
        return "shut down" if self.shut_down else "disconnected"

    def thread_counts(self) -> dict[str, Counter[str]]:
        """Live threads by kind, then by state."""
        out: dict[str, Counter[str]] = {}
        for t in self.threads:
            out.setdefault(str(t.get("kind")), Counter())[str(t.get("state"))] += 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``/dbos/fleet.json``)."""
        return {
            "session_id": self.session_id,
            "app": self.app,
            "state": self.state,
            "executor_id": self.executor_id,
            "application_version": self.application_version,
            "hostname": self.hostname,
            "pid": self.pid,
            "runtime": self.runtime,
            "dbos_version": self.dbos_version,
            "connected_wall": self.connected_wall,
            "last_seen_wall": self.last_seen_wall,
            "disconnected_wall": self.disconnected_wall,
            "close_code": self.close_code,
            "thread_counts": {k: dict(v) for k, v in self.thread_counts().items()},
            "threads": self.threads,
            "workflows": self.workflows,
            "shutdowns": self.shutdowns,
        }


class Fleet:
    """Every executor that connected, and the requests in flight to them."""

    def __init__(self, *, poll_interval: float = 2.0, request_timeout: float = 10.0) -> None:
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self._executors: dict[str, Executor] = {}

    def executors(self) -> list[Executor]:
        """Connected ones first (oldest connection first), then the gone, newest first."""
        items = list(self._executors.values())
        live = sorted((e for e in items if e.connected), key=lambda e: e.connected_wall)
        gone = sorted(
            (e for e in items if not e.connected),
            key=lambda e: e.disconnected_wall or 0.0,
            reverse=True,
        )
        return live + gone

    def get(self, session_id: str) -> Executor | None:
        """One executor by its session id."""
        return self._executors.get(session_id)

    def connect(self, app: str, socket: Socket) -> Executor:
        """A new connection from an app process."""
        now = time.time()
        ex = Executor(uuid.uuid4().hex[:12], app, now, now, socket)
        self._executors[ex.session_id] = ex
        return ex

    def disconnected(self, ex: Executor, code: int | None) -> None:
        """Its websocket closed: fail what it still owed, keep it on the page for a while."""
        ex.socket = None
        ex.disconnected_wall = time.time()
        ex.close_code = code
        for fut in ex.pending.values():
            if not fut.done():
                fut.set_exception(RequestFailed("the executor disconnected"))
        ex.pending.clear()
        gone = [e for e in self.executors() if not e.connected]
        for old in gone[KEEP_GONE:]:
            self._executors.pop(old.session_id, None)

    def on_frame(self, ex: Executor, text: str) -> None:
        """A frame from the executor: a reply to one of our requests (or its shutdown)."""
        ex.last_seen_wall = time.time()
        try:
            msg = json.loads(text)
            request_id = msg["request_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("spindle conductor: %s sent a frame that is not a reply", ex.app)
            return
        if request_id == ex.watch_id and msg.get("type") == "shutdown_report":
            self._record_shutdown(ex, msg)
        fut = ex.pending.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _record_shutdown(self, ex: Executor, msg: dict[str, Any]) -> None:
        report = msg.get("report")
        if msg.get("final"):
            ex.shut_down = True
            if isinstance(msg.get("threads"), list):
                # The threads as they were when its conductor thread stopped.
                ex.threads = [t for t in msg["threads"] if isinstance(t, dict)]
        if isinstance(report, dict) and not any(
            s.get("shutdown_id") == report.get("shutdown_id") for s in ex.shutdowns
        ):
            ex.shutdowns.insert(0, report)

    async def request(
        self, ex: Executor, msg_type: str, timeout: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send one request and await its reply; raises :class:`RequestFailed`."""
        socket = ex.socket
        if socket is None:
            raise RequestFailed(f"{ex.app} ({ex.executor_id}) is not connected")
        request_id = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        ex.pending[request_id] = fut
        try:
            await socket.send_text(
                json.dumps({"type": msg_type, "request_id": request_id, **fields})
            )
            reply = await asyncio.wait_for(fut, timeout or self.request_timeout)
        except TimeoutError:
            raise RequestFailed(f"{ex.app} did not answer {msg_type} in time") from None
        except RequestFailed:
            raise
        except Exception as exc:
            raise RequestFailed(f"cannot send {msg_type}: {type(exc).__name__}: {exc}") from None
        finally:
            ex.pending.pop(request_id, None)
        if reply.get("error_message"):
            raise RequestFailed(str(reply["error_message"]))
        return reply

    async def watch(self, ex: Executor) -> None:
        """Ask for the executor's identity and its shutdowns, then poll its threads."""
        info = await self.request(ex, "executor_info")
        ex.executor_id = _opt_str(info.get("executor_id"))
        ex.application_version = _opt_str(info.get("application_version"))
        ex.hostname = _opt_str(info.get("hostname"))
        ex.dbos_version = _opt_str(info.get("dbos_version"))
        meta = info.get("executor_metadata")
        if isinstance(meta, dict):
            ex.pid = meta.get("pid") if isinstance(meta.get("pid"), int) else None
            ex.runtime = _opt_str(meta.get("runtime"))
        if ex.runtime == "spindle":
            # A DBOS app would answer these with "Unknown message type": ask only Spindle.
            ex.watch_id = uuid.uuid4().hex
            socket = ex.socket
            if socket is not None:
                msg = {"type": "shutdown_report", "request_id": ex.watch_id, "watch": True}
                await socket.send_text(json.dumps(msg))
        while ex.connected:
            await self.poll_once(ex)
            await asyncio.sleep(self.poll_interval)

    async def poll_once(self, ex: Executor) -> None:
        """Refresh one executor's threads and recent workflows."""
        with contextlib.suppress(RequestFailed):
            if ex.runtime == "spindle":
                dump = await self.request(ex, "thread_dump")
                ex.threads = [t for t in dump.get("threads") or () if isinstance(t, dict)]
            listed = await self.request(
                ex, "list_workflows", body={"limit": RECENT_WORKFLOWS, "sort_desc": True}
            )
            ex.workflows = [w for w in listed.get("output") or () if isinstance(w, dict)]


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
