"""Counts the SQLite commits that wrote, for the benchmarks' drivers.

A trace callback on every SQLAlchemy-made sqlite3 connection sees each statement: a write
outside a transaction is a commit of its own; a transaction is one commit if it wrote.
The drivers copy this file beside themselves, since they also run in the ``dbos`` venv:
it needs only sqlite3 and SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")

#: Commits that wrote, since install() (read ``commits[0]``).
commits = [0]
#: Every PRAGMA statement seen (what each implementation sets, e.g. ``synchronous``).
pragmas: list[str] = []
_lock = threading.Lock()


def _tracer() -> Callable[[str], None]:
    state = {"in": False, "dirty": False}

    def trace(sql: str) -> None:
        s = sql.lstrip().upper()
        if s.startswith("BEGIN"):
            state["in"], state["dirty"] = True, False
        elif s.startswith(("COMMIT", "END")):
            if state["in"] and state["dirty"]:
                with _lock:
                    commits[0] += 1
            state["in"] = False
        elif s.startswith("ROLLBACK") and not s.startswith("ROLLBACK TO"):
            state["in"] = False
        elif s.startswith(WRITES):
            if state["in"]:
                state["dirty"] = True
            else:
                with _lock:
                    commits[0] += 1
        elif s.startswith("PRAGMA"):
            with _lock:
                pragmas.append(sql.strip())

    return trace


def install() -> None:
    """Trace every sqlite3 connection SQLAlchemy makes from now on."""

    @event.listens_for(Engine, "connect")
    def _trace(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.set_trace_callback(_tracer())


def measured_of(module: Any) -> str:
    """``name version (path)`` of the package a driver imported (``spindle`` or ``dbos``)."""
    from importlib import metadata

    name = module.__name__
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = "(not installed: imported from a source tree)"
    return f"{name} {version} ({Path(module.__file__ or '?').resolve().parent})"


def report_measured(module: Any) -> None:
    """Print which package this driver measures, on stderr, before it measures anything."""
    import sys

    print(f"bench driver: measuring {measured_of(module)}", file=sys.stderr, flush=True)
