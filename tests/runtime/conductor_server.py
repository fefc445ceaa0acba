"""A test conductor: a real websocket server on loopback speaking DBOS's conductor protocol.

Written from the documented wire format (JSON text frames; a reply repeats the request's
``type`` and ``request_id``), not from Spindle's own server, so the client is checked
against the contract rather than against itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import socket
import threading
import uuid
from typing import Any

from websockets.sync.server import Server, ServerConnection, serve


class Session:
    """One app's connection to the test conductor; the test sends requests through it."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.path = conn.request.path if conn.request is not None else ""
        self.done = threading.Event()

    def request(self, msg_type: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (checked to repeat type and request_id)."""
        request_id = uuid.uuid4().hex
        self.conn.send(json.dumps({"type": msg_type, "request_id": request_id, **fields}))
        reply = self.receive(timeout)
        assert reply["type"] == msg_type, reply
        assert reply["request_id"] == request_id, reply
        return reply

    def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame the app sends, as JSON."""
        data: dict[str, Any] = json.loads(self.conn.recv(timeout=timeout))
        return data

    def close(self) -> None:
        """The conductor closes the socket (the app should reconnect)."""
        self.conn.close()
        self.done.set()


class LoopbackConductor:
    """Serves ``ws://127.0.0.1:<port>``; each connection becomes a :class:`Session`."""

    def __init__(self) -> None:
        self.sessions: queue.Queue[Session] = queue.Queue()
        self._all: list[Session] = []
        self.server: Server = serve(self._handler, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="test-conductor", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL apps are given as ``conductor_url``."""
        return f"ws://127.0.0.1:{self.port}"

    def _handler(self, conn: ServerConnection) -> None:
        session = Session(conn)
        self._all.append(session)
        self.sessions.put(session)
        # The session stays open until the test (or stop()) is done with it.
        session.done.wait()

    def next_session(self, timeout: float = 10.0) -> Session:
        """The next app connection (raises ``queue.Empty`` after ``timeout``)."""
        return self.sessions.get(timeout=timeout)

    def stop(self) -> None:
        """Release every session, stop serving and join the serving thread."""
        for s in self._all:
            s.done.set()
        self.server.shutdown()
        self._thread.join(10)


class SilentConductor:
    """Accepts the websocket handshake, then never reads: pings go unanswered.

    Raw sockets, because a websocket library answers pings for you; this is the conductor
    whose network died after the upgrade, which only the keepalive can notice.
    """

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: queue.Queue[socket.socket] = queue.Queue()
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-silent", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL apps are given as ``conductor_url``."""
        return f"ws://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            key = next(
                line.split(":", 1)[1].strip()
                for line in head.decode().split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
            sock.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            self._socks.append(sock)
            self.accepted.put(sock)

    def stop(self) -> None:
        """Close every accepted socket and the listener; join the accepting thread."""
        self._stop.set()
        try:
            # shutdown() wakes the accept() blocked in the serving thread; close() alone
            # does not on Linux.
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(10)
        for sock in self._socks:
            sock.close()
