"""``python -m spindle`` and the ``spindle`` console script."""

from __future__ import annotations

import sys

from spindle.cli import main as _cli_main


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spindle`` command."""
    return _cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
