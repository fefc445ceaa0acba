"""The public faces of spindle.diagnostics and spindle.testing, and the dependency direction."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import spindle as spindle_pkg
import spindle.diagnostics
import spindle.testing

ROOT = Path(__file__).resolve().parents[2]

DIAGNOSTICS_API = {
    "LINT_RULES",
    "RULES",
    "RUNTIME_NAME_PREFIXES",
    "SHUTDOWN_PHASES",
    "WAITING_ON_VALUES",
    "Clock",
    "DiagnosticsError",
    "DiagnosticsSession",
    "EventType",
    "JoinOutcome",
    "LifecycleEvent",
    "Lint",
    "PhaseRecord",
    "PySpyError",
    "PySpyThread",
    "RealClock",
    "RegistrySnapshot",
    "ShutdownRecorder",
    "ShutdownTimeline",
    "SpanEmitter",
    "SpanExportConfigError",
    "StopEvent",
    "StopEventInfo",
    "ThreadGroup",
    "ThreadInfo",
    "ThreadKind",
    "ThreadRecord",
    "ThreadRegistry",
    "ThreadStack",
    "ThreadState",
    "Violation",
    "add_timeline_listener",
    "capture_stack",
    "check_rules",
    "dump_stacks",
    "format_stack",
    "lint",
    "load_report",
    "parse_pyspy_json",
    "pyspy_dump",
    "set_default_tracer_provider_for_tests",
    "waiting_on",
}

TESTING_API = {
    "FakeClock",
    "LeakedThreadsError",
    "RealClock",
    "check_no_leaked_threads",
    "runtime_threads",
    "thread_idents",
}


def test_diagnostics_exports_exactly_the_public_api() -> None:
    assert set(spindle.diagnostics.__all__) == DIAGNOSTICS_API
    for name in DIAGNOSTICS_API:
        assert getattr(spindle.diagnostics, name) is not None


def test_testing_exports_exactly_the_public_api() -> None:
    assert set(spindle.testing.__all__) == TESTING_API
    for name in TESTING_API:
        assert getattr(spindle.testing, name) is not None


def test_diagnostics_source_never_imports_runtime_or_web() -> None:
    """diagnostics is below runtime and web: no import of either, in any module."""
    offenders = []
    for path in sorted((ROOT / "spindle" / "diagnostics").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.level and node.module and node.module.split(".")[0] in ("runtime", "web"):
                    names = ["spindle." + node.module]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.startswith(("spindle.runtime", "spindle.web"))
            ]
    assert offenders == []


def test_importing_diagnostics_loads_no_runtime_module() -> None:
    # spindle/__init__.py re-exports the runtime's API by design, so stand a bare package in
    # its place: what is measured is what diagnostics and testing themselves pull in.
    pkg = Path(spindle_pkg.__file__).parent
    code = (
        "import sys, types; m = types.ModuleType('spindle'); "
        f"m.__path__ = [{str(pkg)!r}]; sys.modules['spindle'] = m; "
        "import spindle.diagnostics, spindle.testing; "
        "print([m for m in sys.modules if m.startswith(('spindle.runtime', 'spindle.web'))])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_pytest_plugin_is_registered_as_entry_point() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["entry-points"]["pytest11"] == {"spindle": "spindle.testing._plugin"}
