"""Geometry of the server-side SVG drawings: the shutdown timeline and the state strips.

Only numbers and strings are computed here; the templates write the SVG, so every label
goes through Jinja's autoescape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from spindle.diagnostics import EventType, JoinOutcome, ShutdownTimeline, ThreadKind
from spindle.diagnostics._phases import PHASES_BY_NAME

from ._history import Strip

WIDTH = 1000
LABEL_W = 260
RIGHT_PAD = 20
ROW_H = 20
AXIS_H = 28
CHART_W = WIDTH - LABEL_W - RIGHT_PAD


@dataclass(frozen=True, slots=True)
class Tick:
    """An axis tick."""

    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Rect:
    """A bar: a phase, or one state segment of a strip."""

    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class Mark:
    """A point mark on a thread row: signal, exit or join."""

    x: float
    y: float
    kind: str  # signal | exit | join
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class VLine:
    """A vertical line across the chart (a database closed or interrupted)."""

    x: float
    y1: float
    y2: float
    cls: str
    label: str


@dataclass(slots=True)
class Row:
    """A labelled row of the drawing."""

    y: float
    label: str
    cls: str
    href: str | None = None
    line: tuple[float, float] | None = None  # signal→join span on a thread row


@dataclass(slots=True)
class Drawing:
    """Everything a template needs to draw one SVG."""

    width: int
    height: int
    label_w: int
    axis_y: float
    ticks: list[Tick] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    rects: list[Rect] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    vlines: list[VLine] = field(default_factory=list)


def _nice_step(span: float) -> float:
    raw = span / 8
    if raw <= 0:
        return 1.0
    exp = math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        step = m * 10**exp
        if step >= raw:
            return float(step)
    return float(10 ** (exp + 1))


def _fmt_sec(sec: float) -> str:
    if abs(sec) < 1:
        return f"{sec * 1000:.0f}ms"
    return f"{sec:.3g}s" if abs(sec) < 100 else f"{sec:.0f}s"


def _fmt_tick(sec: float, step: float) -> str:
    # As many decimals as the step needs, so neighbouring ticks never read the same.
    unit, scale = ("s", 1.0) if step >= 1 else ("ms", 1e3) if step >= 1e-3 else ("µs", 1e6)
    decimals = max(0, -math.floor(math.log10(step * scale) + 1e-9))
    return f"{sec * scale:.{decimals}f}{unit}"


def _axis(t0: float, span: float, y: float, *, relative_to_end: bool = False) -> list[Tick]:
    step = _nice_step(span)
    ticks = []
    k = 0
    while k * step <= span + 1e-12 and k < 50:
        t = k * step
        if relative_to_end:
            label = "now" if span - t < step / 2 else _fmt_tick(-(span - t), step)
        else:
            label = _fmt_tick(t, step)
        ticks.append(Tick(LABEL_W + t / span * CHART_W, label))
        k += 1
    return ticks


def shutdown_drawing(timeline: ShutdownTimeline) -> Drawing:
    """Phases as bars on a time axis, one row per thread with signal/exit/join, DB closes."""
    t0 = timeline.started_mono
    monos = [e.mono for e in timeline.events]
    monos += [p.end_mono for p in timeline.phases if p.end_mono is not None]
    end = max([timeline.ended_mono or t0, *monos])
    span = max(end - t0, 1e-3)

    def x(t: float) -> float:
        return LABEL_W + max(0.0, min(1.0, (t - t0) / span)) * CHART_W

    violating = {i for v in timeline.violations for i in v.thread_ids}
    violating_phases = {v.phase for v in timeline.violations if v.phase}
    drawing = Drawing(WIDTH, 0, LABEL_W, AXIS_H - 8)
    drawing.ticks = _axis(t0, span, AXIS_H - 8)
    y = float(AXIS_H)
    for p in timeline.phases:
        bad = p.outcome == "error" or p.name in violating_phases
        cls = "phase violation" if bad else "phase"
        pend = p.end_mono if p.end_mono is not None else end
        drawing.rows.append(Row(y, f"{p.index}. {p.name}", "label " + cls))
        title = f"{p.name}: {_fmt_sec(pend - p.start_mono)} ({p.outcome})"
        spec = PHASES_BY_NAME.get(p.name)
        if spec is not None:
            title += f"; stops {spec.stops}"
        if p.error:
            title += f" {p.error}"
        drawing.rects.append(
            Rect(x(p.start_mono), y + 3, max(2.0, x(pend) - x(p.start_mono)), ROW_H - 6, cls, title)
        )
        y += ROW_H
    y += ROW_H / 2

    events_by_thread: dict[int, list[Any]] = {}
    for e in timeline.events:
        if e.record_id is not None:
            events_by_thread.setdefault(e.record_id, []).append(e)
    kind_order = {k: i for i, k in enumerate(ThreadKind)}
    threads = sorted(timeline.threads.values(), key=lambda t: (kind_order[t.kind], t.record_id))
    for info in threads:
        bad_thread = " violation" if info.record_id in violating else ""
        row = Row(y, f"{info.name} ({info.kind.value})", "label thread" + bad_thread)
        first = last = None
        for e in events_by_thread.get(info.record_id, []):
            mark = None
            if e.type is EventType.STOP_EVENT_SET:
                mark = Mark(x(e.mono), y + ROW_H / 2, "signal", "signal", "stop event set")
            elif e.type is EventType.EXIT:
                outcome = str(e.attrs.get("outcome", "exited"))
                mark = Mark(x(e.mono), y + ROW_H / 2, "exit", "exit " + outcome, outcome)
            elif e.type is EventType.JOIN:
                outcome = str(e.attrs.get("outcome", "?"))
                bad = outcome != JoinOutcome.JOINED.value
                mark = Mark(
                    x(e.mono),
                    y + ROW_H / 2,
                    "join",
                    "join violation" if bad else "join",
                    f"join {outcome} after {_fmt_sec(float(e.attrs.get('duration') or 0))}",
                )
            if mark is not None:
                drawing.marks.append(mark)
                first = mark.x if first is None else first
                last = mark.x
        if first is not None and last is not None and last > first:
            row.line = (first, last)
        drawing.rows.append(row)
        y += ROW_H
    bottom = y
    for v_event in timeline.events:
        if v_event.type in (EventType.DB_CLOSE, EventType.DB_INTERRUPT):
            db = str(v_event.attrs.get("database", "database"))
            closing = v_event.type is EventType.DB_CLOSE
            bad = closing and any(
                v.rule in ("db-closed-while-thread-alive", "thread-not-joined-before-db-close")
                for v in timeline.violations
            )
            drawing.vlines.append(
                VLine(
                    x(v_event.mono),
                    AXIS_H - 4,
                    bottom,
                    ("dbclose" if closing else "dbinterrupt") + (" violation" if bad else ""),
                    ("close " if closing else "interrupt ") + db,
                )
            )
    drawing.height = int(bottom + ROW_H)
    return drawing


def strips_drawing(start: float, now: float, strips: list[Strip]) -> Drawing:
    """One row per thread, coloured by state over the window (oldest left, now right)."""
    span = max(now - start, 1e-3)

    def x(t: float) -> float:
        return LABEL_W + max(0.0, min(1.0, (t - start) / span)) * CHART_W

    drawing = Drawing(WIDTH, 0, LABEL_W, AXIS_H - 8)
    drawing.ticks = _axis(start, span, AXIS_H - 8, relative_to_end=True)
    y = float(AXIS_H)
    for strip in strips:
        drawing.rows.append(Row(y, f"{strip.name} ({strip.kind.value})", "label thread"))
        for seg in strip.segments:
            w = max(2.0, x(seg.end) - x(seg.start))
            drawing.rects.append(
                Rect(
                    x(seg.start),
                    y + 3,
                    w,
                    ROW_H - 6,
                    "state state-" + seg.state.value,
                    f"{seg.state.value} for {_fmt_sec(seg.end - seg.start)}",
                )
            )
        y += ROW_H
    drawing.height = int(y + ROW_H / 2)
    return drawing
