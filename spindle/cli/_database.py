"""``spindle migrate`` and ``spindle reset``: the system database's schema."""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from spindle.runtime._migrations import LATEST_VERSION
from spindle.runtime._schema import SCHEMA, metadata

from ._errors import CliError
from ._sysdb import add_database_argument, database_url, open_database, shown


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate`` and ``reset``."""
    migrate = subparsers.add_parser(
        "migrate",
        help="create or upgrade the system database's tables",
        description="Create the system database (PostgreSQL) and bring its schema up to date.",
    )
    add_database_argument(migrate)
    migrate.set_defaults(func=run_migrate)

    reset = subparsers.add_parser(
        "reset",
        help="delete every workflow, step, message, event and schedule (asks first)",
        description="Drop Spindle's system tables; the next launch or migrate creates them "
        "empty. Application data is not touched.",
    )
    add_database_argument(reset)
    reset.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(func=run_reset)


def run_migrate(args: argparse.Namespace) -> int:
    """Apply the forward migrations."""
    with open_database(args) as sysdb:
        sysdb.migrate()
    print(f"{shown(database_url(args))}: schema at version {LATEST_VERSION}")
    return 0


def run_reset(args: argparse.Namespace) -> int:
    """Drop the system tables, after a confirmation unless ``--yes``."""
    url = database_url(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("reset deletes every workflow: pass --yes to confirm (no terminal)", 2)
        answer = input(
            f"Delete every workflow, step, message, event and schedule in {shown(url)}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("reset cancelled")
            return 1
    with open_database(args) as sysdb, sysdb.transaction() as conn:
        if sysdb.sqlite:
            metadata.drop_all(conn)
        else:
            # The schema holds the tables, the enqueue sequence and the NOTIFY triggers.
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
    print(
        f"{shown(url)}: system tables dropped (the next launch or `spindle migrate` recreates them)"
    )
    return 0
