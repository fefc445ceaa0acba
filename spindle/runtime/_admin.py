"""The admin server: uvicorn serving the admin app from a supervised thread (phase 5)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

import uvicorn
from starlette.applications import Starlette

from spindle.diagnostics import StopEvent, ThreadKind

from ._supervisor import Supervised, Supervisor

logger = logging.getLogger("spindle")


class AdminServerPortInUse(OSError):
    """The admin port is taken."""


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen now, so a taken port is one clear error at launch, not a traceback
    from inside uvicorn's thread, and requests queue in the backlog until it accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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


class AdminServer:
    """Runs ``app`` on ``host:port`` in the ``dbos-admin-server`` thread."""

    def __init__(self, supervisor: Supervisor, app: Starlette, host: str, port: int) -> None:
        self._supervisor = supervisor
        self._app = app
        self.host = host
        self.port = port
        self.thread: Supervised | None = None

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
