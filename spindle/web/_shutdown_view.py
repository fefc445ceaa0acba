"""The shutdown page as an engineer reads it: a phase table, the shutdown in progress, and
one stack per thread, innermost first, each saying when it was captured."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from spindle.diagnostics import ShutdownTimeline

from ._dashboard import clean_frames, parse_id

SPAWN_RULE = "spawn-after-shutdown-began"


def fmt_wall(ts: float | None) -> str:
    """Epoch seconds as ``HH:MM:SS.mmm UTC`` (the date is in the title attribute)."""
    if ts is None:
        return ""
    ms = round((ts % 1) * 1000) % 1000
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{ms:03d} UTC"


def fmt_date(ts: float | None) -> str:
    """Epoch seconds as an ISO date and time, UTC."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def fmt_secs(sec: float | None) -> str:
    """A duration for a table cell: ``12 ms``, ``3.20 s``."""
    if sec is None:
        return ""
    if sec < 1:
        return f"{sec * 1000:.0f} ms" if sec >= 0.01 else f"{sec * 1000:.2f} ms"
    return f"{sec:.2f} s"


def thread_text(t: dict[str, Any]) -> str:
    """One responsible thread: name, workflow and step, how its join ended."""
    text = str(t.get("name") or f"#{t.get('record_id')}")
    if t.get("workflow_id"):
        work = f"workflow {t.get('workflow_name')} {str(t['workflow_id'])[:8]}…"
        if t.get("step_name"):
            work += f", step {t['step_name']}"
        text += f" ({work})"
    outcome = t.get("outcome")
    duration = t.get("duration")
    if outcome == "timeout":
        text += f": join timed out after {fmt_secs(duration)}"
    elif duration is not None:
        text += f": joined after {fmt_secs(duration)}"
    return text


@dataclass(slots=True)
class PhaseRow:
    """One line of the phase table."""

    index: int
    name: str
    start_wall: str
    start_date: str
    offset: str
    duration: str
    outcome: str
    error: str | None
    threads: list[str]
    stops: str


@dataclass(slots=True)
class StackBlock:
    """One thread's stack (once, whatever number of violations name the thread)."""

    record_id: str
    thread: str
    label: str
    frames: list[dict[str, Any]]  # innermost first
    captured: str
    workflow: str = ""


@dataclass(slots=True)
class Progress:
    """What a shutdown still running waits on now."""

    phase: str | None
    phase_elapsed: str
    elapsed: str
    joining: dict[str, Any] | None
    stack: StackBlock | None


@dataclass(slots=True)
class ShutdownView:
    """Everything the shutdown page shows of one timeline, besides the drawing."""

    timeline: ShutdownTimeline
    started: str
    phases: list[PhaseRow]
    progress: Progress | None
    stacks: list[StackBlock] = field(default_factory=list)
    violation_links: list[list[tuple[str, str]]] = field(default_factory=list)


def build_view(timeline: ShutdownTimeline, stops: dict[str, str]) -> ShutdownView:
    """The page's data for ``timeline`` (``stops``: what each phase stops, by name)."""
    t0 = timeline.started_mono
    rows = [
        PhaseRow(
            index=p.index,
            name=p.name,
            start_wall=fmt_wall(p.start_wall),
            start_date=fmt_date(p.start_wall),
            offset="+" + fmt_secs(p.start_mono - t0),
            duration=fmt_secs(p.duration)
            if p.duration is not None
            else f"running for {fmt_secs(_live_elapsed(timeline, p.name))}",
            outcome=p.outcome,
            error=p.error,
            threads=[thread_text(t) for t in p.threads],
            stops=stops.get(p.name, ""),
        )
        for p in timeline.phases
    ]
    view = ShutdownView(
        timeline=timeline,
        started=f"{fmt_date(timeline.started_wall)} ({fmt_wall(timeline.started_wall)})",
        phases=rows,
        progress=_progress(timeline),
    )
    _stacks(view)
    return view


def _live_elapsed(timeline: ShutdownTimeline, name: str) -> float | None:
    progress = timeline.progress or {}
    if progress.get("phase") == name:
        value = progress.get("phase_elapsed_sec")
        return float(value) if value is not None else None
    return None


def _progress(timeline: ShutdownTimeline) -> Progress | None:
    p = timeline.progress
    if timeline.ended_mono is not None or p is None:
        return None
    joining = p.get("joining")
    stack = None
    if joining:
        frames = clean_frames(joining.get("stack"))
        stack = StackBlock(
            record_id=str(joining.get("record_id")),
            thread=str(joining.get("name")),
            label=f"stack of {joining.get('name')}, live",
            frames=list(reversed(frames)),
            captured=fmt_wall(joining.get("stack_captured_wall")),
        )
    return Progress(
        phase=p.get("phase"),
        phase_elapsed=fmt_secs(p.get("phase_elapsed_sec")),
        elapsed=fmt_secs(p.get("elapsed_sec")),
        joining=joining,
        stack=stack,
    )


def _stacks(view: ShutdownView) -> None:
    timeline = view.timeline
    spawned_late = {
        str(i) for v in timeline.violations if v.rule == SPAWN_RULE for i in v.thread_ids
    }
    seen: dict[str, StackBlock] = {}
    for v in timeline.violations:
        links = []
        for tid, frames in v.stacks.items():
            rid = parse_id(str(tid))
            info = timeline.threads.get(rid) if rid is not None else None
            name = info.name if info else f"#{tid}"
            links.append((str(tid), name))
            if str(tid) in seen:
                continue  # one stack per thread, however many violations name it
            label = (
                f"stack of the code that spawned {name} (taken at the spawn)"
                if str(tid) in spawned_late
                else f"stack of {name}"
            )
            seen[str(tid)] = StackBlock(
                record_id=str(tid),
                thread=name,
                label=label,
                frames=list(reversed(clean_frames(frames))),
                captured=fmt_wall(timeline.stacks_captured_wall.get(str(tid))),
                workflow=info.work_text() if info else "",
            )
        view.violation_links.append(links)
    view.stacks = list(seen.values())
