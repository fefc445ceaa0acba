"""Offline viewer: ``python -m spindle.web REPORT.json [--port N]`` serves a saved shutdown."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spindle.diagnostics import load_report

from ._app import build_app
from ._source import ReportSource


def main(argv: Sequence[str] | None = None) -> int:
    """Load the report and serve its shutdown view until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m spindle.web", description="Serve a saved shutdown report's timeline."
    )
    parser.add_argument("report", help="a shutdown report JSON (DiagnosticsSession report_path)")
    parser.add_argument("--port", type=int, default=3001, help="port (default 3001)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        timeline = load_report(args.report)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        print(f"spindle.web: cannot load {args.report}: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    app = build_app(ReportSource([timeline]), allow_pyspy=False, home="shutdown")
    print(f"spindle.web: serving http://{args.host}:{args.port}/shutdown", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
