"""``python -m spindle``: the ``spindle`` command."""

from __future__ import annotations

import sys

from spindle.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
