"""Opening a system database from ``--sys-db-url`` (or ``DBOS_SYSTEM_DATABASE_URL``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from spindle.runtime._sysdb import SystemDatabase

from ._errors import CliError

URL_ENV = "DBOS_SYSTEM_DATABASE_URL"
_DB_URL = re.compile(r"^(sqlite|postgres(ql)?)(\+\w+)?://")


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    """``-s/--sys-db-url``, as DBOS's CLI spells it."""
    parser.add_argument(
        "-s",
        "--sys-db-url",
        default=None,
        metavar="URL",
        help=f"the system database URL (sqlite:/// or postgresql://; default: ${URL_ENV})",
    )


def database_url(args: argparse.Namespace) -> str:
    """The URL to use, checked, or a one-line error saying how to give one."""
    url = args.sys_db_url or os.environ.get(URL_ENV)
    if not url:
        raise CliError(f"no system database: pass -s/--sys-db-url URL or set {URL_ENV}", 2)
    if not _DB_URL.match(url):
        raise CliError(f"--sys-db-url must be a sqlite:/// or postgresql:// URL, not {url!r}", 2)
    return str(url)


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ValueError, sa.exc.ArgumentError):
        return "<the system database>"


@contextlib.contextmanager
def open_database(args: argparse.Namespace) -> Iterator[SystemDatabase]:
    """The system database, closed on the way out; database errors become one line."""
    url = database_url(args)
    try:
        sysdb = SystemDatabase(url, pool_size=2)
    except sa.exc.SQLAlchemyError as exc:
        raise CliError(f"cannot open {shown(url)}: {_first_line(exc)}") from None
    try:
        yield sysdb
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        text = _first_line(exc)
        if "no such table" in text or "does not exist" in text:
            raise CliError(
                f"{shown(url)} has no Spindle tables (run `spindle migrate -s URL`): {text}"
            ) from None
        raise CliError(f"database error on {shown(url)}: {text}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise CliError(f"database error on {shown(url)}: {_first_line(exc)}") from None
    finally:
        sysdb.close(timeout=5.0)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
