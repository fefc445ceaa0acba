"""In-process stack capture from ``sys._current_frames()``."""

from __future__ import annotations

import gc
import os
import sys
import threading
import traceback
from types import FrameType
from typing import Any

# Serialises our own callers of current_frames(), so one cannot re-enable the collector
# while another is inside the call.
_FRAMES_GUARD = threading.Lock()


def current_frames() -> dict[int, FrameType]:
    """``sys._current_frames()`` with the garbage collector off for the call: the only
    way this package reads other threads' frames.

    In CPython 3.11 the call holds the runtime's thread-list lock while it allocates frame
    objects; a collection those allocations start may free a ``threading.local``, whose
    deallocation takes the same lock, and the process deadlocks with the GIL held
    (CPython gh-106883; the 3.11 fix was not merged). Seen here: every thread waiting for
    the GIL, one of them inside ``_PyThread_CurrentFrames`` -> ``gc_collect_main``. The
    dashboard reads frames on every refresh, so this would freeze the process that a user
    is looking at. A collector the application had turned off stays off.
    """
    with _FRAMES_GUARD:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return sys._current_frames()
        finally:
            if enabled:
                gc.enable()


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
            # co_qualname ("Event.wait", not "wait") is what py-spy reports too, and what
            # waiting_on() reads to tell an event wait from a condition wait.
            "qualname": summary.f_code.co_qualname,
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
    if out and frame is not None:
        _hint_driver(out[-1], frame)
    return out


def _hint_driver(entry: dict[str, Any], frame: FrameType) -> None:
    # sqlite3 blocks in C, so the innermost Python frame is the caller's ``conn.execute(...)``
    # line; whether that receiver is sqlite3 is told by the module's globals (never locals:
    # those are captured only when asked). The hint is one short string, not data.
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and any(v is sqlite3 for v in frame.f_globals.values()):
        entry["db_driver"] = "sqlite3"


def top_frames(frame: FrameType | None, depth: int) -> list[dict[str, Any]]:
    """The innermost ``depth`` frames, innermost last, with source lines; cheap for snapshots."""
    out: list[dict[str, Any]] = []
    innermost = frame
    while frame is not None and len(out) < depth:
        out.append(
            {
                "filename": frame.f_code.co_filename,
                "lineno": frame.f_lineno,
                "function": frame.f_code.co_name,
                "qualname": frame.f_code.co_qualname,
                "line": None,
            }
        )
        frame = frame.f_back
    out.reverse()
    for entry in out:
        entry["line"] = _source_line(entry["filename"], entry["lineno"])
    if out and innermost is not None:
        _hint_driver(out[-1], innermost)
    return out


def capture_stack(ident: int, *, with_locals: bool = False) -> list[dict[str, Any]] | None:
    """The current stack of the thread with this ident, or None if it is not running.

    Without the diagnostics' own bookkeeping at its innermost end (see
    :func:`trim_bookkeeping`).
    """
    frame = current_frames().get(ident)
    if frame is None:
        return None
    return trim_bookkeeping(frames_of(frame, with_locals=with_locals))


_DIAGNOSTICS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_THREADING_FILE = os.path.abspath(threading.__file__)


def trim_bookkeeping(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``frames`` without the innermost frames that are Spindle recording the thread.

    A thread caught while the registry records its exit (``mark_exited -> emit ->
    _on_event: with self._lock``) shows the recorder's lock, which reads like a lock
    problem of the thread. The innermost run of diagnostics frames (and the ``threading``
    frames they called) is cut; the thread's own frame that called into them stays
    innermost. A stack made only of such frames is kept whole.
    """
    i = len(frames)
    while i > 0 and os.path.abspath(frames[i - 1]["filename"]) == _THREADING_FILE:
        i -= 1
    j = i
    while j > 0 and os.path.abspath(frames[j - 1]["filename"]).startswith(_DIAGNOSTICS_DIR):
        j -= 1
    if j == i or j == 0:
        return frames  # no bookkeeping at the end (or nothing but it): as captured
    return frames[:j]


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
