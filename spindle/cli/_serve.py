"""``spindle serve REPORT.json`` (the offline viewer) and ``spindle demo`` (the demo app)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``demo``."""
    serve = subparsers.add_parser(
        "serve",
        help="serve a saved shutdown report in the dashboard (no app running)",
        description="Serve the shutdown timeline of a saved report at /shutdown.",
    )
    serve.add_argument("report", help="a shutdown report JSON (shutdown_report_path)")
    serve.add_argument("--port", type=int, default=3001, help="port (default 3001, 0: any)")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.set_defaults(func=run_serve)

    demo = subparsers.add_parser(
        "demo",
        help="run the demo app with the dashboard up, until Ctrl-C",
        description="Run durable workflows on SQLite with the dashboard and /metrics up.",
    )
    demo.add_argument("--port", type=int, default=3001, help="admin/dashboard port")
    demo.add_argument("--database", default="sqlite:///spindle-demo.sqlite")
    demo.add_argument("--rate", type=float, default=2.0, help="orders per second")
    demo.set_defaults(func=run_demo)


def run_serve(args: argparse.Namespace) -> int:
    """Hand over to the offline viewer (``python -m spindle.web``)."""
    from spindle.web.__main__ import main as serve_main

    return serve_main([args.report, "--port", str(args.port), "--host", args.host])


def run_demo(args: argparse.Namespace) -> int:
    """Hand over to the demo (``python -m spindle.demo``)."""
    from spindle.demo import main as demo_main

    demo_main(["--port", str(args.port), "--database", args.database, "--rate", str(args.rate)])
    return 0
