"""The HTML pages. Every page works without JavaScript; htmx only makes /threads live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from spindle.diagnostics import RULES, ThreadKind, ThreadState
from spindle.diagnostics._phases import PHASE_SPECS, PREPARE_STEPS
from spindle.diagnostics._rule_docs import RULE_DOCS

from ._auth import COOKIE
from ._dashboard import Dashboard, ThreadDetail, parse_id
from ._shutdown_view import build_view, fmt_date, fmt_wall
from ._svg import shutdown_drawing, strips_drawing
from ._threads import KINDS, STATES, BadQuery, Filters

HERE = Path(__file__).parent
STATIC = HERE / "static"

# autoescape for every template: thread names, stacks and exception texts are data from
# the app and must never become markup.
ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def dashboard(request: Request) -> Dashboard:
    """The dashboard this request's app serves."""
    dash: Dashboard = request.app.state.dashboard
    # A mounted app's lifespan only runs when the parent forwards it: start the history on
    # first use too (idempotent), so state strips fill either way.
    if not dash.running:
        dash.start()
    return dash


def htmx_available() -> bool:
    """True when ``./run`` copied htmx into static/ (it is git-ignored; pages work without)."""
    return (STATIC / "htmx.min.js").is_file()


def base_path(request: Request) -> str:
    """Where the dashboard is mounted ("" at the root), for links."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the context every page shares."""
    dash: Dashboard = request.app.state.dashboard
    context.update(
        base=base_path(request),
        service=dash.service_name,
        has_htmx=htmx_available(),
        kinds=KINDS,
        states=STATES,
        home=request.app.state.home,
        # Logged in through the login form (not a bearer header): offer to log out.
        logged_in=COOKIE in request.cookies,
    )
    html = ENV.get_template(template).render(context)
    return HTMLResponse(html, status_code=status)


def filters_of(request: Request) -> Filters:
    """The kind/state filters of a request, or 400 naming the bad value."""
    try:
        return Filters.parse(request.query_params)
    except BadQuery as exc:
        raise HTTPException(400, str(exc)) from None


async def home(request: Request) -> Response:
    """``/``: to the home page (threads, or shutdown in the offline viewer)."""
    return RedirectResponse(f"{base_path(request)}/{request.app.state.home}", status_code=303)


async def threads_page(request: Request) -> Response:
    """``/threads``: counts, then the table grouped by kind, refreshed every ~2 s by htmx."""
    filters = filters_of(request)
    table = dashboard(request).table(filters)
    return render(request, "threads.html", table=table, filters=filters)


async def threads_fragment(request: Request) -> Response:
    """``/threads/fragment``: the live part of /threads, for htmx to swap in."""
    filters = filters_of(request)
    table = dashboard(request).table(filters)
    return render(request, "_threads_live.html", table=table, filters=filters)


def detail_or_404(request: Request) -> ThreadDetail:
    """The thread named by the ``id`` path parameter, or 404."""
    raw = str(request.path_params.get("id", ""))
    record_id = parse_id(raw)
    detail = dashboard(request).thread(record_id) if record_id is not None else None
    if detail is None:
        raise HTTPException(404, f"no thread with id {raw!r}")
    return detail


async def thread_page(request: Request) -> Response:
    """``/threads/{id}``: record, lifecycle events, stack, and the py-spy form."""
    detail = detail_or_404(request)
    return render(request, "thread.html", d=detail, pyspy=None, dash=dashboard(request))


async def thread_pyspy(request: Request) -> Response:
    """``POST /threads/{id}/pyspy``: take a py-spy dump and show this thread in it."""
    detail = detail_or_404(request)
    dash = dashboard(request)
    result = await anyio.to_thread.run_sync(dash.pyspy, detail.info)
    if request.headers.get("hx-request") == "true":
        return render(request, "_pyspy.html", pyspy=result, d=detail)
    return render(request, "thread.html", d=detail, pyspy=result, dash=dash)


async def shutdown_page(request: Request) -> Response:
    """``/shutdown``: the latest timelines as server-drawn SVG, violations in red."""
    dash = dashboard(request)
    timelines = dash.timelines()
    wanted = request.query_params.get("id")
    current = timelines[0] if timelines else None
    if wanted is not None:
        current = next((t for t in timelines if t.shutdown_id == wanted), None)
        if current is None:
            raise HTTPException(404, f"no shutdown timeline with id {wanted!r}")
    stops = {s.name: s.stops for s in PHASE_SPECS}
    return render(
        request,
        "shutdown.html",
        timelines=timelines,
        current=current,
        view=build_view(current, stops) if current else None,
        drawing=shutdown_drawing(current) if current else None,
        planned=PHASE_SPECS,
        prepare_steps=PREPARE_STEPS,
    )


async def rules_page(request: Request) -> Response:
    """``/rules``: what each ordering rule protects against, and what to do (one anchor
    per rule: the shutdown page's violations link here)."""
    return render(request, "rules.html", rules=RULES, docs=RULE_DOCS)


async def history_page(request: Request) -> Response:
    """``/history``: per-thread state over the last minutes (VisualVM's thread timeline)."""
    filters = filters_of(request)
    dash = dashboard(request)
    dash.sample_history()
    now = dash.source.registry.now()
    start, strips = dash.history.strips(now)
    strips = [s for s in strips if not filters.kinds or s.kind in filters.kinds]
    return render(
        request,
        "history.html",
        drawing=strips_drawing(start, now, strips),
        filters=filters,
        window=dash.history.window_sec,
        shown_sec=now - start,
        state_values=[s.value for s in ThreadState],
    )


def kind_label(kind: ThreadKind) -> str:
    """A kind as a heading."""
    return kind.value.replace("_", " ")


ENV.filters["kind_label"] = kind_label
ENV.filters["wall"] = fmt_wall
ENV.filters["date"] = fmt_date
