"""/threads, /threads/fragment and /threads.json over a registry with live threads."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from spindle.diagnostics import ThreadKind
from spindle.web import _diag, create_app

from .conftest import Runtime


def test_threads_page_shows_counts_then_threads_grouped_by_kind(client: TestClient) -> None:
    """Counts by kind and state come first, then one table section per present kind."""
    r = client.get("/threads")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert html.index('id="counts"') < html.index('id="threads"')
    sections = re.findall(r'<tbody class="kind" data-kind="([a-z_]+)"', html)
    assert sections == ["timeout", "notification_listener", "queue", "poller", "scheduler"]
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
    """``?kind=queue&state=running`` keeps only running queue threads."""
    data = client.get("/threads.json?kind=queue&state=running").json()
    assert {t["kind"] for t in data["threads"]} == {"queue"}
    assert {t["state"] for t in data["threads"]} == {"running"}
    assert data["shown"] == 3
    assert data["filters"] == {"kind": ["queue"], "state": ["running"]}
    # Repeated and comma-separated values both mean "any of".
    both = client.get("/threads.json?kind=queue,poller").json()
    assert {t["kind"] for t in both["threads"]} == {"queue", "poller"}
    assert client.get("/threads.json?kind=queue&kind=poller").json()["shown"] == both["shown"]
    none = client.get("/threads.json?state=exited-error").json()
    assert none["threads"] == []
    assert none["total"] == 8


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


def test_fragment_polls_itself_with_the_same_filter(client: TestClient) -> None:
    """The fragment is the live part only, and its poll URL keeps the filter."""
    r = client.get("/threads/fragment?kind=queue&state=running")
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="threads-live"')
    assert "<html" not in r.text
    assert 'hx-get="/threads/fragment?kind=queue&amp;state=running"' in r.text
    assert 'hx-trigger="every 2s"' in r.text


def test_page_works_without_javascript(client: TestClient) -> None:
    """A plain GET form filters and a refresh link keeps the filter; no meta refresh."""
    html = client.get("/threads?kind=queue").text
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
    assert data["counts"]["queue"] == {"running": 3}


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


@pytest.mark.skipif(
    not _diag.available("waiting_on"),
    reason="spindle.diagnostics.waiting_on has not landed from branch diag yet",
)
def test_waits_on_column_names_what_the_thread_blocks_on(client: TestClient) -> None:
    """Each live thread's row says what it waits on (from its stack)."""
    rows = client.get("/threads.json?state=running").json()["threads"]
    assert rows
    assert all(r["waits_on"] for r in rows)


@pytest.mark.skipif(
    not _diag.available("lint"), reason="spindle.diagnostics.lint has not landed from branch diag"
)
def test_lints_json(client: TestClient) -> None:
    """/lints.json answers with the registry's lints."""
    data = client.get("/lints.json").json()
    assert data["service"] == "shop"
    assert isinstance(data["lints"], list)
