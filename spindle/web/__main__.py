"""Offline viewer: ``python -m spindle.web REPORT.json [--port N]`` serves a saved shutdown."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Sequence

import uvicorn

from spindle.diagnostics import load_report

from ._app import build_app
from ._source import ReportSource


class _AnnouncingServer(uvicorn.Server):
    """Prints the URL once the socket listens, so a caller can wait on that line."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"spindle.web: serving http://{host}:{port}/shutdown", file=sys.stderr)
            sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Load the report and serve its shutdown view until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m spindle.web",
        description="Serve the shutdown timeline of a saved report (no app running).",
    )
    parser.add_argument("report", help="a shutdown report JSON (report_path of a session)")
    parser.add_argument("--port", type=int, default=3001, help="port (default 3001, 0: any)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        timeline = load_report(args.report)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        print(f"spindle.web: cannot load {args.report}: {exc}", file=sys.stderr)
        return 2
    app = build_app(ReportSource([timeline]), allow_pyspy=False, home="shutdown")
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    _AnnouncingServer(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
