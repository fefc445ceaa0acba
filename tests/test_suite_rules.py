"""The suite's own rules: a hang fails one test, and a missing piece is never a silent pass."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests import _requires
from tests.conftest import UNIT_TIMEOUT_SEC, unit_timeout

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_has_a_timeout(pytestconfig: pytest.Config) -> None:
    """pyproject sets a per-test timeout, and the faulthandler backstop fires after it."""
    timeout = float(pytestconfig.getini("timeout"))
    assert timeout == 120.0
    assert float(pytestconfig.getini("faulthandler_timeout")) > timeout


def test_unit_tests_get_the_shorter_timeout(request: pytest.FixtureRequest) -> None:
    """Unit tests get a timeout below the default unless slow; the others keep the default."""
    tests = Path(__file__).resolve().parent
    unit = tests / "diagnostics" / "test_registry.py"
    assert unit_timeout(unit, slow=False) == UNIT_TIMEOUT_SEC < 120.0
    assert unit_timeout(unit, slow=True) is None
    assert unit_timeout(tests / "runtime" / "test_admin.py", slow=False) is None
    assert unit_timeout(Path(__file__), slow=False) is None
    # The hook applied it: this top-level test carries no marker of its own.
    assert request.node.get_closest_marker("timeout") is None


@pytest.mark.slow
def test_a_hang_fails_its_one_test_with_every_stack(tmp_path: Path) -> None:
    """A test blocked on an Event fails after its timeout, printing the blocked thread's stack,
    and the next test still runs (the run is not stalled until CI's limit)."""
    (tmp_path / "test_hang.py").write_text(
        textwrap.dedent(
            """
            import threading

            def wait_for_a_release_that_never_comes(event):
                event.wait()

            def test_hangs():
                event = threading.Event()
                helper = threading.Thread(
                    target=wait_for_a_release_that_never_comes, args=(event,), daemon=True
                )
                helper.start()
                wait_for_a_release_that_never_comes(event)

            def test_after_the_hang():
                assert True
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "Timeout" in out
    # Both threads' stacks are printed: the test's own and the helper's.
    assert out.count("wait_for_a_release_that_never_comes") >= 2, out


@pytest.mark.parametrize("ci", ["true", "TRUE", ""])
def test_a_missing_requirement_skips_locally_and_fails_under_ci(
    ci: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PostgreSQL, Chromium and htmx all go through one rule: skip here, fail under CI=true."""
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="nothing-here"):
        _requires.require_file(tmp_path / "nothing-here", f"{tmp_path}/nothing-here is missing")
    _requires.require_file(__file__, "never raised: this file exists")


def _mutations_module() -> Any:
    path = ROOT / ".ci" / "mutations.py"
    spec = importlib.util.spec_from_file_location("spindle_ci_mutations", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_every_mutation_of_the_mutation_check_still_applies() -> None:
    """Each mutation's text is in its file exactly once and its test files exist: a module
    that moved, or a line that changed, fails here, in the default run, not months later."""
    mutations = _mutations_module()
    assert len(mutations.MUTATIONS) >= 19
    assert len({m.id for m in mutations.MUTATIONS}) == len(mutations.MUTATIONS)
    for m in mutations.MUTATIONS:
        text = (ROOT / m.path).read_text()
        assert text.count(m.old) == 1, f"{m.id}: {m.old!r} is not in {m.path} exactly once"
        assert m.old != m.new, m.id
        missing_tests = [t for t in m.tests if not (ROOT / t).is_file()]
        assert not missing_tests, f"{m.id}: no such test file {missing_tests}"
