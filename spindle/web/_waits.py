"""What every live thread waits on, memoised by the shape of its top frames.

``waiting_on`` (diagnostics) reads a thread's top frames: file, function, line. Threads that
block at the same place have the same top frames, so the answer is computed once per
distinct (code, line) chain and reused: with 5,000 queue workers blocked in ``stop.wait``
that is one classification instead of 5,000 (the registry's ``snapshot(with_waiting=True)``
classifies every thread on every call: ~110 ms at 5,000 threads, the whole page budget).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import FrameType

from spindle.diagnostics import waiting_on

# top_frames is diagnostics' own frame model for waiting_on (innermost last, with source
# lines and the database driver hint); reusing it keeps both answers identical.
from spindle.diagnostics._stacks import current_frames, top_frames

DEPTH = 8


class WaitClassifier:
    """Classifies threads' waits from ``sys._current_frames()``, with a bounded memo."""

    def __init__(self, max_entries: int = 4096) -> None:
        # key -> (answer, the code objects of the key). Keys hold ids, not code objects: a
        # code object's hash walks its whole contents, an id is free. Keeping the code
        # objects in the value keeps them alive, so no id in a live key can be reused.
        self._memo: dict[tuple[int, ...], tuple[str, tuple[object, ...]]] = {}
        self._max = max_entries

    def classify(self, idents: Iterable[int]) -> dict[int, str]:
        """``waiting_on`` of each running thread among ``idents`` (absent when not running)."""
        frames = current_frames()
        out: dict[int, str] = {}
        for ident in idents:
            frame = frames.get(ident)
            if frame is not None:
                out[ident] = self.classify_frame(frame)
        return out

    def classify_frame(self, frame: FrameType) -> str:
        """``waiting_on`` of one stack, given its innermost frame."""
        # A flat tuple of ints: the innermost frame's globals (the database-driver hint reads
        # them), then (code, line) per frame. Runs once per live thread per page: kept lean.
        parts = [id(frame.f_globals)]
        append = parts.append
        f: FrameType | None = frame
        for _ in range(DEPTH):
            if f is None:
                break
            append(id(f.f_code))
            append(f.f_lineno)
            f = f.f_back
        key = tuple(parts)
        found = self._memo.get(key)
        if found is not None:
            return found[0]
        answer = waiting_on(top_frames(frame, DEPTH))
        keep: list[object] = [frame.f_globals]
        f = frame
        for _ in range(DEPTH):
            if f is None:
                break
            keep.append(f.f_code)
            f = f.f_back
        if len(self._memo) >= self._max:
            self._memo.clear()  # crude but bounded: a new shape costs one classification
        self._memo[key] = (answer, tuple(keep))
        return answer
