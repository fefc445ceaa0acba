"""The admin server: uvicorn serving the admin app from a supervised thread.

Its DBOS management routes close in phase 5 (``stop_admin_server``); the server itself, with
the dashboard, stops in ``stop_dashboard``, after every other thread was joined.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from spindle.diagnostics import StopEvent, ThreadKind

from ._supervisor import Supervised, Supervisor

logger = logging.getLogger("spindle")


class AdminServerPortInUse(OSError):
    """The admin port is taken."""


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen now, so a taken port is one clear error at launch, not a traceback
    from inside uvicorn's thread, and requests queue in the backlog until it accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named explicitly: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says IPPROTO_TCP. Left at 0, Nagle and the client's delayed ACK
    # held every keep-alive response ~40 ms (a 0.5 ms page took 44 ms to arrive).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise AdminServerPortInUse(
                exc.errno, f"admin port {port} on {host} is already in use"
            ) from None
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


#: Paths the dashboard serves (under its mount): they stay up after phase 5.
DASHBOARD_PREFIX = "/dbos/"

#: Diagnostics routes outside the dashboard mount that keep serving like it: a scraper sees
#: the shutdown's own joins and phases.
DIAGNOSTICS_PATHS = frozenset({"/metrics"})

SHUTTING_DOWN = b'{"error": "the admin server is shutting down: management routes are closed"}'


class ManagementGate:
    """The admin app, with its DBOS management routes closable while the dashboard serves.

    Once ``is_closed()`` (phase 5), every path outside the dashboard mount answers 503 with a
    JSON reason, as a server going down would; the dashboard and its JSON API keep answering
    until the server stops (``stop_dashboard``), so a hung shutdown can be watched. It sits
    inside the admin app's authentication layer, so a request without the token gets 401
    even while shutting down: the one layer answers first, for every route.
    """

    def __init__(self, app: ASGIApp, *, is_closed: Callable[[], bool]) -> None:
        self.app = app
        self.is_closed = is_closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.is_closed():
            path = str(scope.get("path", ""))
            if not (
                path.startswith(DASHBOARD_PREFIX)
                or path == DASHBOARD_PREFIX.rstrip("/")
                or path in DIAGNOSTICS_PATHS
            ):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"retry-after", b"5"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": SHUTTING_DOWN})
                return
        await self.app(scope, receive, send)


class AdminServer:
    """Runs ``app`` on ``host:port`` in the ``dbos-admin-server`` thread."""

    def __init__(
        self,
        supervisor: Supervisor,
        app: Starlette,
        host: str,
        port: int,
        *,
        serves_dashboard: bool = False,
    ) -> None:
        self._supervisor = supervisor
        self._app = app
        self._management_closed = False
        self.host = host
        self.port = port
        self.serves_dashboard = serves_dashboard
        self.thread: Supervised | None = None

    def close_management(self) -> None:
        """Phase 5: the DBOS management routes answer 503 from now on."""
        self._management_closed = True

    @property
    def management_closed(self) -> bool:
        """True once :meth:`close_management` ran."""
        return self._management_closed

    def start(self) -> bool:
        """Bind and start; on a taken port log one clear error and return False."""
        try:
            sock = bind_socket(self.host, self.port)
        except AdminServerPortInUse as exc:
            logger.error(
                "spindle: the admin server did not start: %s "
                "(set admin_port, or run_admin_server=False)",
                exc.strerror,
            )
            return False
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
            access_log=False,
        )
        server = uvicorn.Server(config)

        def body(stop: StopEvent) -> None:
            def ask_exit() -> None:
                server.should_exit = True

            stop.add_callback(ask_exit)
            try:
                asyncio.run(server.serve(sockets=[sock]))
            finally:
                sock.close()

        self.thread = self._supervisor.spawn(ThreadKind.ADMIN_SERVER, "dbos-admin-server", body)
        return True

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"
