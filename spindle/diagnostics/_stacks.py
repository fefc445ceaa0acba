"""In-process stack capture from ``sys._current_frames()``."""

from __future__ import annotations

import sys
import traceback
from types import FrameType
from typing import Any

# Frames deeper than this are cut: a stack dump is for a human, and a runaway recursion
# must not make a snapshot of 500 threads slow.
MAX_FRAMES = 64


def frames_of(frame: FrameType | None, *, with_locals: bool = False) -> list[dict[str, Any]]:
    """The frames of one stack, innermost last, as plain data (locals only when asked)."""
    out: list[dict[str, Any]] = []
    for summary, _lineno in traceback.walk_stack(frame):
        entry: dict[str, Any] = {
            "filename": summary.f_code.co_filename,
            "lineno": summary.f_lineno,
            "function": summary.f_code.co_name,
            "line": None,
        }
        if with_locals:
            entry["locals"] = {k: _safe_repr(v) for k, v in summary.f_locals.items()}
        out.append(entry)
        if len(out) >= MAX_FRAMES:
            break
    out.reverse()
    for entry in out:
        entry["line"] = _source_line(entry["filename"], entry["lineno"])
    return out


def capture_stack(ident: int, *, with_locals: bool = False) -> list[dict[str, Any]] | None:
    """The current stack of the thread with this ident, or None if it is not running."""
    frame = sys._current_frames().get(ident)
    if frame is None:
        return None
    return frames_of(frame, with_locals=with_locals)


def format_stack(frames: list[dict[str, Any]]) -> str:
    """A stack as the text ``traceback`` prints, for log lines."""
    lines = []
    for f in frames:
        lines.append(f'  File "{f["filename"]}", line {f["lineno"]}, in {f["function"]}')
        if f.get("line"):
            lines.append(f"    {f['line']}")
    return "\n".join(lines)


def _source_line(filename: str, lineno: int) -> str | None:
    import linecache

    line = linecache.getline(filename, lineno).strip()
    return line or None


def _safe_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break a dump
        text = f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."
