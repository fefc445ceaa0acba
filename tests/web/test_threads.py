"""/threads, /threads/fragment and /threads.json over a registry with live threads."""

from __future__ import annotations

import re
import threading

import pytest
from starlette.testclient import TestClient

from spindle.diagnostics import StopEvent, ThreadKind
from spindle.web import _views, create_app
from tests._requires import require_htmx

from .conftest import Runtime


def test_threads_page_shows_counts_then_threads_grouped_by_kind(client: TestClient) -> None:
    """Counts by kind and state come first, then one table section per present kind."""
    r = client.get("/threads")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert html.index('id="counts"') < html.index('id="threads"')
    sections = re.findall(r'<tbody class="kind" data-kind="([a-z_]+)"', html)
    assert sections == [
        "timeout",
        "notification_listener",
        "queue",
        "poller",
        "scheduler",
        "foreign",
    ]
    # Every kind of the design (and admin_server, foreign) has a row in the counts table.
    for kind in ThreadKind:
        assert f'data-kind="{kind.value}"><th>' in html


def test_children_are_indented_under_their_parent(client: TestClient) -> None:
    """Queue workers follow the queue manager one level deeper; same for schedules."""
    html = client.get("/threads?kind=queue").text
    names = re.findall(r'<td class="name depth-(\d)"><a [^>]*>([^<]+)</a>', html)
    assert names == [
        ("0", "dbos-queue-manager"),
        ("1", "dbos-queue-worker[emails]"),
        ("1", "dbos-queue-worker[billing]"),
    ]
    html = client.get("/threads?kind=scheduler").text
    names = re.findall(r'<td class="name depth-(\d)"><a [^>]*>([^<]+)</a>', html)
    assert names == [("0", "dbos-dynamic-scheduler"), ("1", "dbos-schedule[nightly]")]


def test_filters_by_kind_and_state(client: TestClient) -> None:
    """``?kind=queue&state=waiting`` keeps only queue threads blocked on something."""
    data = client.get("/threads.json?kind=queue&state=waiting").json()
    assert {t["kind"] for t in data["threads"]} == {"queue"}
    # Blocked in stop.wait(): diagnostics reports a running thread that waits as "waiting".
    assert {t["state"] for t in data["threads"]} == {"waiting"}
    assert data["shown"] == 3
    assert data["filters"] == {"kind": ["queue"], "state": ["waiting"], "offset": 0, "limit": 200}
    assert client.get("/threads.json?kind=queue&state=running").json()["shown"] == 0
    # Repeated and comma-separated values both mean "any of".
    both = client.get("/threads.json?kind=queue,poller").json()
    assert {t["kind"] for t in both["threads"]} == {"queue", "poller"}
    assert client.get("/threads.json?kind=queue&kind=poller").json()["shown"] == both["shown"]
    none = client.get("/threads.json?state=exited-error").json()
    assert none["threads"] == []
    everything = client.get("/threads.json").json()
    assert none["total"] == everything["total"] == everything["shown"]


@pytest.mark.parametrize(
    ("query", "word"),
    [("kind=bogus", "kind"), ("state=sleeping", "state"), ("kind=queue&state=%00", "state")],
)
def test_bad_filter_values_are_400_with_a_clear_message(
    client: TestClient, query: str, word: str
) -> None:
    """An unknown kind or state is a 400 that names the value and lists the valid ones."""
    for path in ("/threads", "/threads/fragment", "/threads.json", "/history", "/history.json"):
        r = client.get(f"{path}?{query}")
        assert r.status_code == 400, path
        assert f"unknown {word}" in r.text
    err = client.get(f"/threads.json?{query}").json()
    assert err["status"] == 400
    assert "expected one of" in err["error"]


@pytest.mark.usefixtures("with_htmx")
def test_fragment_polls_itself_with_the_same_filter(client: TestClient) -> None:
    """The fragment is the live part only, and its poll URL keeps the filter."""
    r = client.get("/threads/fragment?kind=queue&state=running")
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="threads-live"')
    assert "<html" not in r.text
    assert 'hx-get="/threads/fragment?kind=queue&amp;state=running"' in r.text
    assert 'hx-trigger="every 2s"' in r.text


def test_page_works_without_javascript(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without htmx: no script, no hx- attributes; a GET form filters, a link refreshes."""
    monkeypatch.setattr(_views, "htmx_available", lambda: False)
    html = client.get("/threads?kind=queue").text
    assert "htmx.min.js" not in html
    assert "hx-" not in html
    assert '<form class="filters" method="get" action="/threads">' in html
    assert 'id="refresh"' in html
    assert 'href="/threads?kind=queue" id="refresh"' in html
    assert "http-equiv" not in html


def test_threads_json_lists_every_thread_with_its_view(
    client: TestClient, runtime: Runtime
) -> None:
    """The JSON rows carry state, parent, group, stop-event state and depth."""
    data = client.get("/threads.json").json()
    assert data["service"] == "shop"
    by_name = {t["name"]: t for t in data["threads"]}
    worker = by_name["dbos-queue-worker[emails]"]
    manager = runtime.threads["dbos-queue-manager"].record
    assert worker["parent_id"] == manager.record_id
    assert worker["parent_name"] == "dbos-queue-manager"
    assert worker["depth"] == 1
    assert worker["stop_event_set"] is False
    assert worker["group"] == "internal"
    assert by_name["dbos-cron[report]"]["group"] == "poller"
    assert data["counts"]["queue"] == {"waiting": 3}
    assert by_name["dbos-queue-manager"]["waits_on"] == "event"


def test_stop_event_state_is_shown(client: TestClient, runtime: Runtime) -> None:
    """A thread whose stop event was set shows "set" (and state stopping until it exits)."""
    s = runtime.threads["dbos-cron[report]"]
    s.stop.set()
    runtime.supervisor.reap(s, 5.0)
    row = next(t for t in client.get("/threads.json").json()["threads"] if t["name"] == s.name)
    assert row["stop_event_set"] is True
    assert row["state"] == "exited-ok"
    assert '<td class="stop">set</td>' in client.get("/threads?kind=poller").text


def test_thread_names_are_escaped(runtime: Runtime) -> None:
    """A thread named ``<script>alert(1)</script>`` is text, never markup, on every page."""
    evil = runtime.spawn(ThreadKind.POLLER, "<script>alert(1)</script>")
    with TestClient(create_app(runtime.session)) as c:
        for path in ("/threads", "/threads/fragment", f"/threads/{evil.record.record_id}"):
            html = c.get(path).text
            assert "<script>alert(1)</script>" not in html, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path


def test_waits_on_column_names_what_the_thread_blocks_on(client: TestClient) -> None:
    """Each supervised thread blocked in ``stop.wait`` shows ``event`` in its row."""
    rows = client.get("/threads.json").json()["threads"]
    ours = [r for r in rows if r["kind"] != "foreign"]
    assert len(ours) == 8
    assert {r["waits_on"] for r in ours} == {"event"}
    html = client.get("/threads?kind=timeout").text
    assert '<td class="waits">event</td>' in html


def test_foreign_threads_are_listed_as_foreign(client: TestClient) -> None:
    """Threads the runtime did not make (the main thread at least) show as ``foreign``."""
    rows = client.get("/threads.json?kind=foreign").json()["threads"]
    assert "MainThread" in {r["name"] for r in rows}
    main = next(r for r in rows if r["name"] == "MainThread")
    detail = client.get(f"/threads/{main['id']}.json").json()
    assert detail["kind"] == "foreign"
    assert detail["stack_source"] == "live"


def test_lints_are_shown_on_rows_and_on_top(runtime: Runtime) -> None:
    """A thread that died gets its lint on its row; a rogue ``dbos-`` thread one on top."""

    def boom(stop: StopEvent) -> None:
        raise RuntimeError("kaput")

    dead = runtime.spawn(ThreadKind.CONDUCTOR, "dbos-conductor", target=boom)
    dead.thread.join(5.0)
    release = threading.Event()
    rogue = threading.Thread(target=release.wait, args=(10.0,), name="dbos-rogue")
    rogue.start()
    try:
        with TestClient(create_app(runtime.session)) as c:
            data = c.get("/lints.json").json()
            rules = {item["rule"] for item in data["lints"]}
            assert {"thread-died-with-exception", "unregistered-runtime-thread"} <= rules
            row = next(
                t for t in c.get("/threads.json").json()["threads"] if t["name"] == "dbos-conductor"
            )
            assert [item["rule"] for item in row["lints"]] == ["thread-died-with-exception"]
            html = c.get("/threads").text
            assert '<section class="lints">' in html
            assert "dbos-rogue" in html
            assert '<span class="lint"' in html
            page = c.get(f"/threads/{dead.record.record_id}").text
            assert "RuntimeError: kaput" in page
            assert "thread-died-with-exception" in page
    finally:
        release.set()
        rogue.join(5.0)


def test_rows_are_paged_and_counts_cover_every_thread(runtime: Runtime) -> None:
    """``limit``/``offset`` page the rows; counts and ``matched`` still cover all threads."""
    with TestClient(create_app(runtime.session)) as c:
        first = c.get("/threads.json?kind=queue&limit=2").json()
        assert [t["name"] for t in first["threads"]] == [
            "dbos-queue-manager",
            "dbos-queue-worker[emails]",
        ]
        assert first["matched"] == 3
        assert first["next_offset"] == 2
        assert first["counts"]["queue"] == {"waiting": 3}
        second = c.get("/threads.json?kind=queue&limit=2&offset=2").json()
        assert [t["name"] for t in second["threads"]] == ["dbos-queue-worker[billing]"]
        assert second["next_offset"] is None
        html = c.get("/threads?kind=queue&limit=2").text
        assert 'href="/threads?kind=queue&amp;offset=2&amp;limit=2" id="next-page"' in html
        for bad in ("limit=0", "limit=abc", "offset=-1", "limit=99999999", "offset=%C2%B2"):
            r = c.get(f"/threads.json?{bad}")
            assert r.status_code == 400, bad
            assert "must be an integer" in r.json()["error"]


def test_snapshot_is_reused_until_the_registry_changes(runtime: Runtime) -> None:
    """An idle registry is snapshotted once; any event (a new thread) invalidates it."""
    with TestClient(create_app(runtime.session)) as c:
        dash = c.app.state.dashboard  # type: ignore[attr-defined]
        first = dash._registry_snapshot()
        assert dash._registry_snapshot() is first
        runtime.spawn(ThreadKind.QUEUE, "dbos-queue-worker[new]", parent="dbos-queue-manager")
        names = {t["name"] for t in c.get("/threads.json?kind=queue").json()["threads"]}
        assert "dbos-queue-worker[new]" in names
        assert dash._registry_snapshot() is not first


def test_htmx_is_served_from_the_static_route(client: TestClient) -> None:
    """When ./run copied htmx, the page loads it from /static and it is served from there."""
    require_htmx()
    assert 'src="/static/htmx.min.js"' in client.get("/threads").text
    r = client.get("/static/htmx.min.js")
    assert r.status_code == 200
    assert "javascript" in r.headers["content-type"]
    assert "htmx" in r.text[:2000]
