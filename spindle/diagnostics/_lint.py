"""Lints over the live registry: threads and stop events that break the one-door discipline."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from ._kinds import ThreadGroup, ThreadKind, ThreadState
from ._registry import RUNTIME_NAME_PREFIXES, ThreadRecord, ThreadRegistry
from ._stacks import capture_stack, format_stack

logger = logging.getLogger("spindle.diagnostics")

# Two lint() calls at once (dashboard refresh and a test) must not both warn for one thread.
_stuck_lock = threading.Lock()

#: Lint rule ids, each with the sentence a human reads.
LINT_RULES: dict[str, str] = {
    "stuck-after-stop": (
        "The thread's stop event was set and it has not exited after the grace period: it "
        "ignores its stop event or is blocked; see its stack."
    ),
    "stop-event-without-thread": (
        "A stop event was registered but no thread was registered with it: nothing will "
        "ever wait on it."
    ),
    "thread-without-stop-event": (
        "A supervised thread has no stop event: shutdown cannot ask it to stop."
    ),
    "unregistered-runtime-thread": (
        "A live thread has a runtime name prefix but is not in the registry: it was made "
        "outside the one door (supervisor.spawn)."
    ),
    "thread-died-with-exception": "A runtime thread died with an exception.",
}


@dataclass(frozen=True, slots=True)
class Lint:
    """One finding: the rule, the threads involved and the sentence that explains it."""

    rule: str
    message: str
    thread_ids: tuple[int, ...] = ()
    thread_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "rule": self.rule,
            "message": self.message,
            "thread_ids": list(self.thread_ids),
            "thread_names": list(self.thread_names),
        }


def _one(rule: str, record: ThreadRecord, extra: str = "") -> Lint:
    message = LINT_RULES[rule] + (f" {extra}" if extra else "")
    return Lint(rule, message, (record.record_id,), (record.name,))


def lint(registry: ThreadRegistry, *, grace_sec: float, now: float | None = None) -> list[Lint]:
    """Every lint finding in the registry now (``now`` on the registry's monotonic clock).

    A thread found stuck gets its stack captured into its record (``registry.attach_stack``)
    and one warning is logged for it, the first time only.
    """
    now = registry.now() if now is None else now
    out: list[Lint] = []
    records = list(registry.records())
    for r in records:
        if r.state is ThreadState.EXITED_ERROR:
            out.append(_one("thread-died-with-exception", r, r.exception or ""))
            continue
        if not r.alive:
            continue
        if r.kind is not ThreadKind.FOREIGN and r.group is not ThreadGroup.EXECUTOR:
            if r.stop is None:
                out.append(_one("thread-without-stop-event", r))
            elif (
                r.stop.is_set()
                and r.stop.set_mono is not None
                and now - r.stop.set_mono > grace_sec
            ):
                waited = now - r.stop.set_mono
                out.append(_one("stuck-after-stop", r, f"Stop event set {waited:.1f}s ago."))
                _report_stuck(registry, r, waited)
    for entry in registry.stop_event_records():
        # The supervisor registers the stop event an instant before the thread: only an
        # entry older than the grace period is an orphan, not a spawn in progress.
        if entry.thread_record_id is None and now - entry.created_mono > grace_sec:
            out.append(
                Lint(
                    "stop-event-without-thread",
                    LINT_RULES["stop-event-without-thread"] + f" Stop event: {entry.name}.",
                )
            )
    registered = {r.ident for r in registry.live_records() if r.ident is not None}
    objects = {id(r.thread) for r in registry.live_records() if r.thread is not None}
    for t in threading.enumerate():
        if t.ident in registered or id(t) in objects:
            continue
        if t.name.startswith(RUNTIME_NAME_PREFIXES):
            out.append(
                Lint(
                    "unregistered-runtime-thread",
                    LINT_RULES["unregistered-runtime-thread"] + f" Thread: {t.name}.",
                    (),
                    (t.name,),
                )
            )
    return out


def _report_stuck(registry: ThreadRegistry, record: ThreadRecord, waited: float) -> None:
    with _stuck_lock:
        if record.stuck_reported:
            return
        record.stuck_reported = True
    frames = capture_stack(record.ident) if record.ident is not None else None
    if frames:
        registry.attach_stack(record, frames, "stuck-after-stop")
    logger.warning(
        "spindle: thread %s (%s) has not exited %.1fs after its stop event was set:\n%s",
        record.name,
        record.kind.value,
        waited,
        format_stack(frames) if frames else "  (no stack)",
    )
