"""Geometry of the server-side SVG drawings: the shutdown timeline and the state strips.

Only numbers and strings are computed here; the templates write the SVG, so every label
goes through Jinja's autoescape.
"""

from __future__ import annotations

import itertools
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
#: Vertical-line labels closer than this (px) are stacked.
LABEL_GAP = 110.0


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
    label_dy: float = 0.0  # pushed down a line when another label is too close


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
        if relative_to_end:
            # Round offsets back from "now" (-2s, -1s, now), not from an arbitrary start.
            ago = k * step
            t = span - ago
            label = "now" if k == 0 else _fmt_tick(-ago, step)
        else:
            t = k * step
            label = _fmt_tick(t, step)
        ticks.append(Tick(LABEL_W + t / span * CHART_W, label))
        k += 1
    return ticks


class PhaseScale:
    """Time to x, piecewise: every phase (and the stretch before phase 1) gets at least a
    readable width, the rest of the chart shared by duration. A 2 s join no longer squashes
    eight 1 ms phases into one pixel; the axis is labelled at phase starts instead."""

    def __init__(self, t0: float, end: float, cuts: list[float]) -> None:
        points = sorted({t0, end, *(c for c in cuts if t0 < c < end)})
        pieces = [(a, b) for a, b in itertools.pairwise(points) if b > a]
        span = max(end - t0, 1e-9)
        min_w = min(MIN_PHASE_W, CHART_W / max(1, 2 * len(pieces)))
        share = CHART_W - min_w * len(pieces)
        self._pieces: list[tuple[float, float, float, float]] = []  # t_a, t_b, x_a, x_b
        x = float(LABEL_W)
        for a, b in pieces:
            w = min_w + share * (b - a) / span
            self._pieces.append((a, b, x, x + w))
            x += w
        self.t0, self.end = t0, end

    def __call__(self, t: float) -> float:
        if not self._pieces or t <= self.t0:
            return float(LABEL_W)
        for a, b, xa, xb in self._pieces:
            if t <= b:
                return xa + (xb - xa) * (t - a) / (b - a)
        return float(LABEL_W + CHART_W)


#: The narrowest a phase is drawn (px), however short it was.
MIN_PHASE_W = 28.0
#: Closer tick labels than this (px) would overprint: the later one is dropped.
MIN_TICK_GAP = 46.0


def _phase_ticks(x: PhaseScale, starts: list[float], t0: float, end: float) -> list[Tick]:
    ticks: list[Tick] = []
    for t in [*starts, end]:
        pos = x(t)
        if ticks and pos - ticks[-1].x < MIN_TICK_GAP:
            if t == end and len(ticks) > 1:
                ticks.pop()  # the end label wins over the phase start just before it
            else:
                continue
        step = max(t - t0, 1e-3)
        ticks.append(Tick(pos, "0" if t == t0 else "+" + _fmt_tick(t - t0, step / 10)))
    return ticks


def shutdown_drawing(timeline: ShutdownTimeline) -> Drawing:
    """Phases as bars on a time axis, one row per thread with signal/exit/join, DB closes."""
    t0 = timeline.started_mono
    monos = [e.mono for e in timeline.events]
    monos += [p.end_mono for p in timeline.phases if p.end_mono is not None]
    end = max([timeline.ended_mono or t0, *monos])
    cuts = [p.start_mono for p in timeline.phases]
    cuts += [p.end_mono for p in timeline.phases if p.end_mono is not None]
    x = PhaseScale(t0, max(end, t0 + 1e-3), cuts)
    span = max(end - t0, 1e-3)

    violating = {i for v in timeline.violations for i in v.thread_ids}
    violating_phases = {v.phase for v in timeline.violations if v.phase}
    drawing = Drawing(WIDTH, 0, LABEL_W, AXIS_H - 8)
    drawing.ticks = _phase_ticks(x, [p.start_mono for p in timeline.phases], t0, end)
    y = float(AXIS_H)
    for p in timeline.phases:
        bad = p.outcome in ("error", "timeout") or p.name in violating_phases
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
                waited = float(e.attrs.get("duration") or 0)
                # A join that waited for nothing came when its turn came (after a slow
                # one, perhaps): drawn hollow, so it does not read as slow itself.
                quick = not bad and waited < max(0.001, span / 1000)
                title = f"join {outcome} at +{_fmt_sec(e.mono - t0)}, waited {_fmt_sec(waited)}"
                if quick:
                    title += " (the thread had already exited; it was joined in its turn)"
                mark = Mark(
                    x(e.mono),
                    y + ROW_H / 2,
                    "join",
                    "join violation" if bad else "join quick" if quick else "join",
                    title,
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
    last_label_x: list[float] = []
    for v_event in timeline.events:
        if v_event.type in (EventType.DB_CLOSE, EventType.DB_INTERRUPT):
            db = str(v_event.attrs.get("database", "database"))
            closing = v_event.type is EventType.DB_CLOSE
            bad = closing and any(
                v.rule in ("db-closed-while-thread-alive", "thread-not-joined-before-db-close")
                for v in timeline.violations
            )
            vx = x(v_event.mono)
            # Labels of lines close together go on successive lines, never on each other.
            stacked = sum(1 for lx in last_label_x if abs(lx - vx) < LABEL_GAP)
            last_label_x.append(vx)
            drawing.vlines.append(
                VLine(
                    vx,
                    AXIS_H - 4,
                    bottom,
                    ("dbclose" if closing else "dbinterrupt") + (" violation" if bad else ""),
                    ("close " if closing else "interrupt ") + db,
                    label_dy=12.0 * stacked,
                )
            )
    extra = max((v.label_dy for v in drawing.vlines), default=0.0)
    drawing.height = int(bottom + ROW_H + extra)
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
