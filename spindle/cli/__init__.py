"""The ``spindle`` command: one subcommand per module, each adding itself with ``register``."""

from __future__ import annotations

import argparse

from . import _conductor

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's) and run the chosen subcommand."""
    parser = argparse.ArgumentParser(prog="spindle", description="Spindle's command line.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _conductor.register(subparsers)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
