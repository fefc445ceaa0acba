"""Stacks leave out Spindle's own bookkeeping at their innermost end."""

from __future__ import annotations

import os
import threading
from typing import Any

import spindle.diagnostics._registry as registry_module
import spindle.diagnostics._stacks as stacks_module
from spindle.diagnostics._stacks import trim_bookkeeping

DIAG = os.path.dirname(stacks_module.__file__)
THREADING = threading.__file__


def frame(filename: str, function: str) -> dict[str, Any]:
    return {"filename": filename, "lineno": 1, "function": function, "qualname": function}


def test_a_thread_caught_while_its_exit_is_recorded_ends_in_its_own_frame() -> None:
    """mark_exited -> emit -> _on_event: with self._lock is cut; the body's finally stays."""
    frames = [
        frame(THREADING, "_bootstrap"),
        frame("/app/spindle/runtime/_supervisor.py", "body"),
        frame(registry_module.__file__, "mark_exited"),
        frame(registry_module.__file__, "emit"),
        frame(os.path.join(DIAG, "_recorder.py"), "_on_event"),
    ]
    assert [f["function"] for f in trim_bookkeeping(frames)] == ["_bootstrap", "body"]


def test_threading_frames_called_by_the_bookkeeping_go_with_it() -> None:
    frames = [
        frame("/app/worker.py", "run"),
        frame(os.path.join(DIAG, "_registry.py"), "emit"),
        frame(THREADING, "__enter__"),
    ]
    assert [f["function"] for f in trim_bookkeeping(frames)] == ["run"]


def test_a_stack_waiting_in_user_code_is_kept_whole() -> None:
    frames = [frame("/app/worker.py", "run"), frame(THREADING, "wait")]
    assert trim_bookkeeping(frames) == frames


def test_a_stack_of_nothing_but_bookkeeping_is_kept_whole() -> None:
    frames = [frame(os.path.join(DIAG, "_registry.py"), "emit")]
    assert trim_bookkeeping(frames) == frames
