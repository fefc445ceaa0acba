"""``spindle conductor``: serve the conductor websocket and the fleet page."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

TOKEN_ENV = "SPINDLE_CONDUCTOR_TOKEN"


def register(subparsers: Any) -> None:
    """Add the ``conductor`` subcommand to the ``spindle`` parser."""
    p = subparsers.add_parser(
        "conductor",
        help="be the conductor: apps connect over a websocket; fleet page at /dbos/fleet",
        description=(
            "Accept DBOS conductor connections from many app processes (their conductor_url "
            "is ws://HOST:PORT, their conductor_key the token) and serve the fleet page."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8090, help="port (0 picks a free one; default 8090)")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"the token apps send as conductor_key and people log in with (or ${TOKEN_ENV}); "
        "required beyond loopback",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="seconds between thread dumps asked of each executor (default 2)",
    )
    p.set_defaults(func=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 2 on bad arguments, 1 when the port is taken."""
    import uvicorn

    from spindle.runtime._admin import AdminServerPortInUse, bind_socket
    from spindle.web import create_conductor_app

    if not 0 <= args.port <= 65535:
        print(f"spindle conductor: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return 2
    if args.poll_interval <= 0:
        print("spindle conductor: --poll-interval must be positive", file=sys.stderr)
        return 2
    if args.token == "":
        print("spindle conductor: --token must not be empty", file=sys.stderr)
        return 2
    if args.token is None and not _loopback(args.host):
        print(
            f"spindle conductor: a --token (or ${TOKEN_ENV}) is required to listen on "
            f"{args.host}: anyone who can reach it could cancel your workflows",
            file=sys.stderr,
        )
        return 2
    try:
        sock = bind_socket(args.host, args.port)
    except AdminServerPortInUse as exc:
        print(f"spindle conductor: {exc.strerror}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    app = create_conductor_app(token=args.token, poll_interval=args.poll_interval)
    print(
        f"spindle conductor: fleet page at http://{shown}:{port}/dbos/fleet ; "
        f'apps connect with conductor_url="ws://{shown}:{port}"',
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
