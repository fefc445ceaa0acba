"""What the suite needs from the machine: skipped locally with one line, a failure under CI.

PostgreSQL, Debian's Chromium and the htmx copy that ``./run`` makes are all treated alike:
a developer without one still runs the rest (each missing piece is one skip line naming how
to get it), while CI (``CI=true``) must run everything, so a missing piece fails there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spindle.web._views import STATIC

CHROMIUM = "/usr/bin/chromium"
HTMX = STATIC / "htmx.min.js"


def under_ci() -> bool:
    """True on CI, where nothing the suite needs may be missing."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing(message: str) -> None:
    """Skip the test (locally) or fail it (under CI=true) because ``message`` is missing."""
    if under_ci():
        pytest.fail(f"{message} (CI=true: every test must run)", pytrace=False)
    pytest.skip(message)


def require_file(path: Path | str, message: str) -> None:
    """``missing(message)`` unless ``path`` is a file."""
    if not Path(path).is_file():
        missing(message)


def require_htmx() -> None:
    """htmx is git-ignored; ``./run`` copies it from the pinned npm package."""
    require_file(HTMX, f"{HTMX} is missing: run `./run test` (npm ci copies it)")


def require_chromium() -> None:
    """The browser tests drive Debian's chromium, never a downloaded build."""
    require_file(CHROMIUM, f"{CHROMIUM} is missing (apt-get install chromium); browser tests")
