"""The ``spindle`` command: one module per command group, each with ``register(subparsers)``.

``main`` builds one argparse parser from :data:`COMMANDS`; a command's handler takes the
parsed namespace and returns the exit status. Every failure a user can cause (a bad argument,
an unreachable server, a 401, a missing file) is one line on stderr and a non-zero status,
never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType
from typing import NoReturn

from . import _conductor, _database, _serve, _shutdown, _threads, _workflow
from ._errors import CliError

#: The command modules, in the order ``spindle --help`` lists them.
COMMANDS: list[ModuleType] = [_threads, _shutdown, _serve, _workflow, _database, _conductor]


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``spindle: error: ...``) and status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every module's subcommands under one parser."""
    parser = _Parser(
        prog="spindle",
        description="Spindle: inspect a running app's threads and shutdowns, and manage "
        "its workflows through the system database.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``spindle`` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except CliError as exc:
        print(f"spindle: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        # The reader went away (`spindle threads | head`): stop quietly, as Unix tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaced for the interpreter's exit
        return 141
    except KeyboardInterrupt:
        print("spindle: interrupted", file=sys.stderr)
        return 130
    return status


__all__ = ["COMMANDS", "CliError", "build_parser", "main"]
