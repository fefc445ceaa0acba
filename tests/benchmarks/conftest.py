"""Collect ``bench_*.py`` only when the benchmarks are asked for (``./run bench``).

The default ``pytest`` run recurses into this folder too; it must not pay for benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _asked_for(config: pytest.Config) -> bool:
    root = Path(config.invocation_params.dir)
    for arg in config.invocation_params.args:
        path = (root / str(arg).split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench_*.py`` as test modules when this folder was named on the command line."""
    is_bench = file_path.name.startswith("bench_") and file_path.suffix == ".py"
    if is_bench and _asked_for(parent.config):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
