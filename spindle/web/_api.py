"""The JSON API: the same data as the pages (documented in docs/dashboard-api.md)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from spindle.diagnostics import ShutdownTimeline, format_stack

from ._dashboard import clean_frames
from ._views import dashboard, detail_or_404, filters_of


async def threads_json(request: Request) -> Response:
    """``/threads.json``: counts and the filtered threads."""
    dash = dashboard(request)
    table = dash.table(filters_of(request))
    return JSONResponse(table.to_dict(dash.service_name))


async def thread_json(request: Request) -> Response:
    """``/threads/{id}.json``: one thread with its events and stack."""
    return JSONResponse(detail_or_404(request).to_dict())


async def thread_pyspy_json(request: Request) -> Response:
    """``POST /threads/{id}/pyspy.json``: a py-spy dump seen from this thread."""
    detail = detail_or_404(request)
    dash = dashboard(request)
    result = await anyio.to_thread.run_sync(dash.pyspy, detail.info)
    return JSONResponse({"id": detail.info.record_id, **result.to_dict()})


def timeline_json(timeline: ShutdownTimeline) -> dict[str, Any]:
    """A timeline as the report's JSON, with each violation's stacks also as text."""
    data = timeline.to_dict()
    for t in (data.get("threads") or {}).values():
        if t.get("captured_stack"):
            t["captured_stack"] = clean_frames(t["captured_stack"])
    for v in data.get("violations", []):
        v["stacks"] = {k: clean_frames(f) for k, f in (v.get("stacks") or {}).items()}
        v["stack_text"] = {k: format_stack(f) for k, f in v["stacks"].items()}
    return data


async def shutdown_json(request: Request) -> Response:
    """``/shutdown.json``: the kept timelines, newest first (``?id=`` for one)."""
    dash = dashboard(request)
    timelines = dash.timelines()
    wanted = request.query_params.get("id")
    if wanted is not None:
        timelines = [t for t in timelines if t.shutdown_id == wanted]
        if not timelines:
            raise HTTPException(404, f"no shutdown timeline with id {wanted!r}")
    return JSONResponse(
        {"service": dash.service_name, "timelines": [timeline_json(t) for t in timelines]}
    )


async def lints_json(request: Request) -> Response:
    """``/lints.json``: every current lint."""
    dash = dashboard(request)
    return JSONResponse({"service": dash.service_name, "lints": dash.lints()})


async def history_json(request: Request) -> Response:
    """``/history.json``: per-thread state segments over the window."""
    filters = filters_of(request)
    dash = dashboard(request)
    dash.sample_history()
    now = dash.source.registry.now()
    start, strips = dash.history.strips(now)
    return JSONResponse(
        {
            "window_start_mono": start,
            "now_mono": now,
            "window_sec": dash.history.window_sec,
            "threads": [
                s.to_dict() for s in strips if not filters.kinds or s.kind in filters.kinds
            ],
        }
    )
