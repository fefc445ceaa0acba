"""The conductor client: thread kind 8, ``dbos-conductor``, a websocket to a conductor.

One supervised thread connects to ``conductor_url/websocket/<app>/<key>``, answers each
request frame (``_conductor_handlers``), and sends keepalive pings itself (no second
thread): its ``recv`` has a short timeout, so the same loop notices its stop event, a ping
that is due and a pong that is late. Any failure or a close by the server leads to a
reconnect after a capped exponential back-off with jitter. It is stopped by its own phase,
after the workflow drain (DBOS issue #824: a conductor should see the last workflows
finish), and before it closes it sends a conductor that asked for it (``shutdown_report``
with ``watch``) the shutdown timeline recorded so far.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from spindle.diagnostics import ShutdownTimeline, StopEvent, ThreadKind, check_rules, dump_stacks

from ._conductor_handlers import answer
from ._conductor_protocol import MessageType, parse, reply
from ._supervisor import Supervised

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

THREAD_NAME = "dbos-conductor"
#: A connection that lasted this long resets the back-off.
HEALTHY_AFTER_SEC = 10.0


def conductor_websocket_url(conductor_url: str, app_name: str, conductor_key: str) -> str:
    """Where DBOS apps connect: the URL (its path prefix kept) + ``/websocket/<app>/<key>``."""
    return conductor_url.rstrip("/") + f"/websocket/{app_name}/{conductor_key}"


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before reconnect ``attempt`` (1, 2, ...): exponential, capped, with
    jitter in its upper half, so a fleet that lost its conductor does not return in step."""
    ceiling: float = min(cap, base * float(2 ** max(0, attempt - 1)))
    return ceiling / 2 + rand() * ceiling / 2


class ConductorClient:
    """The ``dbos-conductor`` thread and its connection."""

    def __init__(
        self,
        rt: Runtime,
        conductor_url: str,
        conductor_key: str,
        *,
        ping_interval: float = 20.0,
        pong_timeout: float = 15.0,
        poll_interval: float = 0.2,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        open_timeout: float = 5.0,
        close_timeout: float = 2.0,
    ) -> None:
        self._rt = rt
        self.url = conductor_websocket_url(conductor_url, rt.config.name, conductor_key)
        # The key is a secret: logs and the registry show the URL without it.
        self.display_url = conductor_websocket_url(conductor_url, rt.config.name, "***")
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.thread: Supervised | None = None
        #: Successful connections so far (a reconnect adds one).
        self.connections = 0
        self._connected = threading.Condition()
        # request_ids of `shutdown_report` requests with "watch": answered again at stop.
        self._watchers: list[str] = []

    def start(self) -> None:
        """Spawn the ``dbos-conductor`` thread (internal group, stopped by its own phase)."""
        self.thread = self._rt.supervisor.spawn(ThreadKind.CONDUCTOR, THREAD_NAME, self._run)

    def wait_connected(self, count: int, timeout: float) -> bool:
        """Block until ``count`` connections have been made (for tests and tools)."""
        with self._connected:
            return self._connected.wait_for(lambda: self.connections >= count, timeout)

    # -- the thread ----------------------------------------------------------------------

    def _note(self, text: str) -> None:
        if self.thread is not None:
            self._rt.registry.set_status(self.thread.record, text)

    def _run(self, stop: StopEvent) -> None:
        attempt = 0
        while not stop.is_set():
            opened = time.monotonic()
            try:
                self._note(f"connecting to {self.display_url}")
                ws = connect(
                    self.url,
                    open_timeout=self.open_timeout,
                    close_timeout=self.close_timeout,
                    # Keepalive is this thread's: the library's would be a thread of its own.
                    ping_interval=None,
                    max_size=None,
                )
            except InvalidStatus as exc:
                why = f"conductor refused the connection: HTTP {exc.response.status_code}"
            except Exception as exc:
                why = f"cannot connect: {type(exc).__name__}: {exc}"
            else:
                with ws:
                    with self._connected:
                        self.connections += 1
                        self._connected.notify_all()
                    logger.info("spindle: connected to the conductor at %s", self.display_url)
                    why = self._serve(ws, stop)
            if stop.is_set():
                break
            # A connection that lived a while was healthy: start the back-off over. One the
            # conductor drops at once keeps backing off, so a refusing server is not hammered.
            attempt = 1 if time.monotonic() - opened >= HEALTHY_AFTER_SEC else attempt + 1
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
            logger.warning(
                "spindle: conductor connection lost (%s); reconnecting in %.1fs", why, delay
            )
            self._note(f"reconnecting in {delay:.1f}s (attempt {attempt}): {why}")
            stop.wait(delay)
        self._note("stopped")

    def _serve(self, ws: ClientConnection, stop: StopEvent) -> str:
        """Answer requests until stopped or the connection fails; returns why it ended."""
        since = time.strftime("%H:%M:%S")
        self._note(f"connected to {self.display_url} since {since}")
        next_ping = time.monotonic() + self.ping_interval
        pong: threading.Event | None = None
        ping_sent = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if pong is not None and pong.is_set():
                    pong, next_ping = None, ping_sent + self.ping_interval
                elif pong is not None and now - ping_sent > self.pong_timeout:
                    ws.close(1011, "keepalive pong timeout")
                    return f"no pong within {self.pong_timeout:.1f}s"
                if pong is None and now >= next_ping:
                    pong, ping_sent = ws.ping(), now
                wait = self.poll_interval
                if pong is None:
                    wait = max(0.0, min(wait, next_ping - now))
                try:
                    frame = ws.recv(timeout=wait)
                except TimeoutError:
                    continue
                self._watch(frame)
                out = answer(self._rt, frame)
                if out is not None:
                    ws.send(out)
            self._send_final_report(ws)
            ws.close(1001, "executor shutting down")
            return "stopped"
        except ConnectionClosed as exc:
            return f"closed by the conductor ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except Exception as exc:
            logger.exception("spindle: conductor connection failed")
            return f"{type(exc).__name__}: {exc}"

    def _watch(self, frame: str | bytes) -> None:
        try:
            msg_type, request_id, msg = parse(frame)
        except ValueError:
            return
        if msg_type == MessageType.SHUTDOWN_REPORT and msg.get("watch") is True:
            self._watchers.append(request_id)

    def _send_final_report(self, ws: ClientConnection) -> None:
        """Tell a watching conductor how this shutdown has gone so far, with the threads."""
        if not self._watchers:
            return
        try:
            fields = final_report(self._rt)
        except Exception:
            logger.exception("spindle: cannot build the conductor's shutdown report")
            return
        for request_id in self._watchers:
            ws.send(reply(MessageType.SHUTDOWN_REPORT, request_id, None, **fields))


def final_report(rt: Runtime) -> dict[str, Any]:
    """The shutdown recorded so far (rules judged over the phases that ran) and a dump."""
    live = rt.shutdown_timeline
    report: dict[str, Any] | None = None
    if live is not None:
        # A copy: the shutdown goes on recording into the live one while we judge this.
        for _ in range(3):
            try:
                data = live.to_dict()
                break
            except RuntimeError:  # a dict changed size under us: take it again
                continue
        else:
            data = None
        if data is not None:
            partial = ShutdownTimeline.from_dict(data)
            partial.planned_phases = tuple(p.name for p in partial.phases)
            partial.violations = check_rules(partial)
            report = partial.to_dict()
            report["in_progress"] = True
    snap = rt.registry.snapshot(include_foreign=True)
    return {
        "report": report,
        "final": True,
        "threads": [t.to_dict() for t in snap.threads if t.state.alive],
        "stacks": [s.to_dict() for s in dump_stacks(rt.registry)],
    }
