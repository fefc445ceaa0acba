"""Every system-database query runs under the transient-error retry (``_db_retry``).

Read from the source by AST, so a query added later without ``@retried`` fails here: each
``<db>.transaction(...)`` in ``spindle/runtime`` must sit in a function decorated with
``@retried`` (itself or one enclosing it), or in a lambda handed to ``<x>.retrier.call``.
"""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "spindle" / "runtime"

#: (module, function) that open a transaction without the retry, and why that is right.
EXEMPT = {
    # The definition every query goes through, not a query.
    ("_sysdb.py", "transaction"): "SystemDatabase.transaction itself",
    # A scrape must not wait out an outage: it reports spindle_system_database_up 0 instead.
    ("_metrics.py", "database_families"): "a failing database is a sample, not a wait",
}


def _unretried() -> list[str]:
    found: list[str] = []
    for path in sorted(RUNTIME.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "transaction"
            ):
                continue
            innermost: str | None = None
            covered = False
            up: ast.AST = node
            while up in parents:
                up = parents[up]
                if isinstance(up, ast.FunctionDef | ast.AsyncFunctionDef):
                    innermost = innermost or up.name
                    if any(ast.unparse(d).endswith("retried") for d in up.decorator_list):
                        covered = True
                elif (
                    isinstance(up, ast.Call)
                    and isinstance(up.func, ast.Attribute)
                    and up.func.attr == "call"
                    and ast.unparse(up.func.value).endswith("retrier")
                ):
                    covered = True
            if not covered and (path.name, innermost) not in EXEMPT:
                found.append(f"{path.name}:{node.lineno} {innermost}()")
    return found


def test_every_system_database_transaction_is_retried() -> None:
    """No function in spindle/runtime opens a system-database transaction outside the retry."""
    assert _unretried() == []


def test_the_pin_sees_transactions() -> None:
    """The scan finds the decorated queries too (it would pass vacuously otherwise)."""
    calls = sum(
        ast.unparse(n.func).endswith(".transaction")
        for p in RUNTIME.glob("*.py")
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Call)
    )
    assert calls >= 50
    for module, function in EXEMPT:
        source = (RUNTIME / module).read_text()
        assert f"def {function}(" in source, (module, function)
