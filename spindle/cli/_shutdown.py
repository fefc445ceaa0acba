"""``spindle shutdown``: the last shutdown timeline as a text table, from an app or a report."""

from __future__ import annotations

import argparse
import json
import time

from spindle.diagnostics import JoinOutcome, ShutdownTimeline, load_report

from ._errors import CliError
from ._http import AdminClient, add_server_arguments


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``shutdown``."""
    parser = subparsers.add_parser(
        "shutdown",
        help="print the last shutdown timeline (phases, joins, violations)",
        description="Print the last shutdown timeline of a running app (--url) or of a saved "
        "report (shutdown_report_path), as a table of phases, join timeouts and violations.",
    )
    parser.add_argument("report", nargs="?", help="a shutdown report JSON (instead of --url)")
    add_server_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the timeline's JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the timeline and print it."""
    if args.report:
        try:
            timeline = load_report(args.report)
        except FileNotFoundError:
            raise CliError(f"no such report: {args.report}", 2) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CliError(f"cannot read the report {args.report}: {exc}", 2) from None
        source = args.report
    else:
        client = AdminClient.from_args(args)
        # An app serves the dashboard under /dbos; `spindle serve` (a saved report) at the root.
        data = client.get_json("/dbos/shutdown.json", missing_ok=True)
        if data is None:
            data = client.get_json("/shutdown.json")
        timelines = data.get("timelines") if isinstance(data, dict) else None
        if not timelines:
            raise CliError(f"{client.url} has recorded no shutdown yet")
        try:
            timeline = ShutdownTimeline.from_dict(timelines[0])
        except (ValueError, KeyError, TypeError) as exc:
            raise CliError(
                f"{client.url} answered a timeline this CLI cannot read: {exc}"
            ) from None
        source = client.url
    if args.json:
        print(json.dumps(timeline.to_dict(), indent=1))
        return 0
    print(format_timeline(timeline, source))
    return 0


def _ms(start: float, end: float | None) -> str:
    return "-" if end is None else f"{(end - start) * 1000:.1f}"


def format_timeline(timeline: ShutdownTimeline, source: str) -> str:
    """The timeline as text: a summary line, the phase table, join timeouts and violations."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timeline.started_wall))
    total = _ms(timeline.started_mono, timeline.ended_mono)
    lines = [
        f"Shutdown {timeline.shutdown_id[:12]} of {timeline.service or '?'} ({source}), "
        f"{when}, {total} ms, {len(timeline.violations)} violation(s)",
        "",
        f"  {'#':>2}  {'phase':<28} {'outcome':<8} {'ms':>9}  error",
    ]
    for p in timeline.phases:
        lines.append(
            f"  {p.index:>2}  {p.name:<28} {p.outcome:<8} {_ms(p.start_mono, p.end_mono):>9}"
            f"  {p.error or ''}".rstrip()
        )
    ran = {p.name for p in timeline.phases}
    for name in timeline.planned_phases:
        if name not in ran:
            lines.append(f"   -  {name:<28} {'not run':<8}")
    leaked = [t for t in timeline.threads.values() if t.join_outcome is JoinOutcome.TIMEOUT]
    if leaked:
        lines += ["", "Join timeouts:"]
        for t in leaked:
            secs = f"{t.join_duration:.1f}s" if t.join_duration is not None else "?"
            lines.append(f"  {t.name} (kind {t.kind.value}) still alive after {secs}")
    lines += ["", "Violations:" if timeline.violations else "Violations: none"]
    for v in timeline.violations:
        threads = ", ".join(v.thread_names) or "-"
        lines.append(f"  [{v.rule}] phase {v.phase or '-'}: {v.message}")
        lines.append(f"      threads: {threads}")
    return "\n".join(lines)
