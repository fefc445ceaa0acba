"""The diagnostics calls the dashboard makes beyond the registry, in one place.

Every call here degrades instead of raising: a dashboard that cannot read a stack still
shows the thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import spindle.diagnostics as _d
from spindle.diagnostics import RegistrySnapshot, ShutdownTimeline, ThreadRegistry


def available(name: str) -> bool:
    """True when ``spindle.diagnostics`` provides ``name``."""
    return hasattr(_d, name)


def snapshot(registry: ThreadRegistry) -> RegistrySnapshot:
    """A registry snapshot including threads the runtime did not make."""
    try:
        snap: RegistrySnapshot = registry.snapshot(include_foreign=True)  # type: ignore[call-arg]
    except TypeError:
        snap = registry.snapshot()
    return snap


def waiting_on(frames: list[dict[str, Any]] | None) -> str | None:
    """What a stack is blocked on, in words, or None when unknown."""
    fn = getattr(_d, "waiting_on", None)
    if fn is None or not frames:
        return None
    text = fn(frames)
    return str(text) if text else None


def dump_stacks(registry: ThreadRegistry) -> dict[int, list[dict[str, Any]]]:
    """Stacks of every registered live thread by record id (never with locals)."""
    fn = getattr(_d, "dump_stacks", None)
    if fn is None:
        return {}
    stacks: dict[int, list[dict[str, Any]]] = fn(registry, with_locals=False)
    return stacks


def lints(registry: ThreadRegistry, grace_sec: float) -> list[dict[str, Any]]:
    """The registry's lints as plain data (empty when lint is not available)."""
    fn = getattr(_d, "lint", None)
    if fn is None:
        return []
    return [item.to_dict() for item in fn(registry, grace_sec=grace_sec)]


class PySpyUnavailable(Exception):
    """py-spy could not produce a dump; the message is the reason, for humans."""


def pyspy_dump(*, native: bool = True, timeout: float = 10.0) -> list[Any]:
    """A py-spy dump of this process, or :class:`PySpyUnavailable` with the reason."""
    fn = getattr(_d, "pyspy_dump", None)
    error_type: type[BaseException] = getattr(_d, "PySpyError", RuntimeError)
    if fn is None:
        raise PySpyUnavailable("this build of spindle.diagnostics has no py-spy support")
    try:
        threads: list[Any] = fn(None, native=native, timeout=timeout)
    except error_type as exc:
        raise PySpyUnavailable(str(getattr(exc, "reason", exc))) from exc
    return threads


def load_report(path: str | Path) -> ShutdownTimeline:
    """Read a saved shutdown report."""
    fn = getattr(_d, "load_report", None)
    if fn is not None:
        timeline: ShutdownTimeline = fn(path)
        return timeline
    from_dict = getattr(ShutdownTimeline, "from_dict", None)
    if from_dict is None:
        raise RuntimeError("this build of spindle.diagnostics cannot load reports")
    loaded: ShutdownTimeline = from_dict(json.loads(Path(path).read_text()))
    return loaded
