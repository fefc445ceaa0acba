"""``spindle threads``: a jstack-like dump of a running app's threads, from its admin server."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from spindle.diagnostics import ThreadKind, ThreadState

from ._errors import CliError
from ._http import AdminClient, add_server_arguments

#: Rows asked for in one request: the dashboard's maximum page.
PAGE = 10_000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``threads``."""
    parser = subparsers.add_parser(
        "threads",
        help="dump a running app's threads (name, kind, state, wait, workflow, stack)",
        description="Dump every thread of a running app, innermost frame first, through its "
        "admin server (the app needs enable_diagnostics=True).",
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--kind",
        action="append",
        choices=[k.value for k in ThreadKind],
        help="only threads of this kind (repeatable)",
    )
    parser.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in ThreadState],
        help="only threads in this state (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--pyspy",
        action="store_true",
        help="ask the server for a py-spy dump (native frames, GIL holder) instead",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fetch the thread table and each thread's detail, and print them."""
    client = AdminClient.from_args(args)
    query: dict[str, Any] = {"limit": PAGE}
    if args.kind:
        query["kind"] = args.kind
    if args.state:
        query["state"] = args.state
    table = client.get_json("/dbos/threads.json", query)
    if not isinstance(table, dict) or not isinstance(table.get("threads"), list):
        raise CliError(f"{client.url}/dbos/threads.json did not answer a thread table")
    rows: list[dict[str, Any]] = table["threads"]
    if args.pyspy:
        return _pyspy(client, rows, args.json)
    threads = []
    for row in rows:
        detail = client.get_json(f"/dbos/threads/{row['id']}.json")
        threads.append({**row, "stack": detail.get("stack") or [], "detail": detail})
    if args.json:
        out = [{k: v for k, v in t.items() if k != "detail"} for t in threads]
        print(json.dumps({"service": table.get("service"), "threads": out}, indent=1))
        return 0
    print(_header(client.url, table, len(threads)))
    for t in threads:
        print()
        print(format_thread(t))
    return 0


def _header(url: str, table: dict[str, Any], shown: int) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(table.get("taken_wall") or 0))
    return (
        f"Thread dump of {table.get('service') or '?'} at {url}, {when}: "
        f"{shown} of {table.get('total', shown)} threads"
    )


def workflow_of(thread: dict[str, Any]) -> str | None:
    """The workflow a thread runs, when the server says (executor records carry it)."""
    for source in (thread, thread.get("detail") or {}):
        for key in ("workflow_id", "workflow"):
            value = source.get(key)
            if isinstance(value, dict):
                value = value.get("workflow_id") or value.get("id")
            if value:
                step = source.get("step") or source.get("step_name")
                return f"{value}" + (f" (step {step})" if step else "")
    return None


def format_frame(frame: dict[str, Any]) -> str:
    """One frame as ``at function (file:line)``, with its source line under it."""
    name = frame.get("qualname") or frame.get("function") or "?"
    where = f"{frame.get('filename') or '?'}:{frame.get('lineno') or '?'}"
    text = f"        at {name} ({where})"
    if frame.get("native"):
        text += " [native]"
    line = frame.get("line")
    if line:
        text += f"\n            {str(line).strip()}"
    return text


def format_thread(t: dict[str, Any]) -> str:
    """One thread: a header line, what it waits on, its workflow, then its stack."""
    flags = [f"kind={t.get('kind')}", f"state={t.get('state')}"]
    if t.get("group"):
        flags.append(f"group={t['group']}")
    if t.get("daemon"):
        flags.append("daemon")
    if t.get("native_id") is not None:
        flags.append(f"tid={t['native_id']}")
    lines = [f'"{t.get("name")}" #{t.get("id")} ' + " ".join(flags)]
    details = [
        f"waits on: {t.get('waits_on') or '-'}",
        f"stop event: {_stop_text(t.get('stop_event_set'))}",
        f"age: {t.get('age_sec', 0):.1f}s",
    ]
    if t.get("parent_name"):
        details.append(f"parent: {t['parent_name']}")
    lines.append("    " + "   ".join(details))
    workflow = workflow_of(t)
    lines.append(f"    workflow: {workflow or '-'}")
    if t.get("status_note"):
        lines.append(f"    status: {t['status_note']}")
    if t.get("exception"):
        lines.append(f"    exception: {t['exception']}")
    stack = list(t.get("stack") or [])
    if not stack:
        lines.append("        (no stack: the thread is not running)")
    # Innermost first, as jstack prints: the frame that blocks is the first one read.
    lines.extend(format_frame(f) for f in reversed(stack))
    return "\n".join(lines)


def _stop_text(value: object) -> str:
    if value is None:
        return "none"
    return "set" if value else "not set"


def _pyspy(client: AdminClient, rows: list[dict[str, Any]], as_json: bool) -> int:
    live = [r for r in rows if r.get("alive") and r.get("kind") != ThreadKind.FOREIGN.value]
    if not live:
        raise CliError("no live runtime thread to anchor a py-spy dump on")
    # One dump of the whole process (py-spy pauses it): every thread comes back in it.
    result = client.post_json(f"/dbos/threads/{live[0]['id']}/pyspy.json")
    if not isinstance(result, dict):
        raise CliError("the py-spy route did not answer a dump")
    if not result.get("threads"):
        raise CliError(f"py-spy dump failed: {result.get('reason') or 'no threads returned'}")
    wanted = {r.get("native_id") for r in rows} | {r.get("ident") for r in rows}
    dumped = [
        t
        for t in result["threads"]
        if t.get("os_thread_id") in wanted or t.get("thread_id") in wanted
    ]
    if as_json:
        print(json.dumps({"gil_holders": result.get("gil_holders"), "threads": dumped}, indent=1))
        return 0
    print(f"py-spy dump of {client.url}: {len(dumped)} threads")
    holders = result.get("gil_holders") or []
    print(f"GIL held by: {', '.join(holders) if holders else 'nobody'}")
    for t in dumped:
        print()
        flags = [f"kind={t.get('kind') or 'foreign'}", f"waits on: {t.get('waiting_on') or '-'}"]
        if t.get("owns_gil"):
            flags.append("owns GIL")
        print(
            f'"{t.get("name") or t.get("os_thread_id")}" tid={t.get("os_thread_id")} '
            + " ".join(flags)
        )
        for frame in reversed(t.get("frames") or []):
            print(format_frame(frame))
    return 0
