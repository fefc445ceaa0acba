"""Benchmarks run on demand only: ``pytest tests/benchmarks -s`` (or SPINDLE_BENCH=1).

Files are named ``bench_*.py``, which pytest does not collect by default; this hook collects
them when this folder (or a file in it) was named on the command line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _requested(config: pytest.Config) -> bool:
    if os.environ.get("SPINDLE_BENCH") == "1":
        return True
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect bench_*.py here, only when asked for."""
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        # A file named on the command line is collected by pytest itself: not twice.
        and not parent.session.isinitpath(file_path)
        and _requested(parent.config)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


#: A whole comparison (venvs installed on first use, both backends) takes many minutes: the
#: suite's per-test timeout is for tests, not for these.
BENCH_TIMEOUT_SEC = 3600.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give the benchmarks (only) a timeout that fits a full run."""
    for item in items:
        if HERE in item.path.resolve().parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(BENCH_TIMEOUT_SEC))
