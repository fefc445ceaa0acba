"""/threads/{id}, its JSON and the py-spy POST."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from spindle.diagnostics import ThreadKind
from spindle.web import create_app

from .conftest import Runtime


def test_thread_page_shows_record_events_and_live_stack(
    client: TestClient, runtime: Runtime
) -> None:
    """The page has the record, the lifecycle events and the in-process stack."""
    worker = runtime.threads["dbos-queue-worker[emails]"].record
    r = client.get(f"/threads/{worker.record_id}")
    assert r.status_code == 200
    html = r.text
    assert "dbos-queue-worker[emails]" in html
    assert "dbos-queue-manager" in html  # the parent, linked
    for event in ("thread.spawn", "thread.start"):
        assert f"<td>{event}</td>" in html
    assert 'id="stack"' in html
    assert "Stack <small>(live)</small>" in html
    assert 'in <code class="fn">idle</code>' in html  # the body's frame: stop.wait in idle()
    assert f'action="/threads/{worker.record_id}/pyspy"' in html


def test_thread_json_has_the_stack_and_no_locals(client: TestClient, runtime: Runtime) -> None:
    """The JSON record carries events and frames; frames never carry locals."""
    worker = runtime.threads["dbos-queue-manager"].record
    data = client.get(f"/threads/{worker.record_id}.json").json()
    assert data["id"] == worker.record_id
    assert data["name"] == "dbos-queue-manager"
    assert data["stack_source"] == "live"
    assert data["stack"]
    assert all("locals" not in f for f in data["stack"])
    assert [c["name"] for c in data["children"]] == [
        "dbos-queue-worker[emails]",
        "dbos-queue-worker[billing]",
    ]
    assert [e["type"] for e in data["events"]][:2] == ["thread.spawn", "thread.start"]


@pytest.mark.parametrize(
    "bad", ["0", "999999", "abc", "-1", "1.5", "%20", "99999999999999999999999", "1e3"]
)
def test_bad_or_unknown_ids_are_404(client: TestClient, bad: str) -> None:
    """Anything that is not a known registry id is a 404, on every per-thread route."""
    assert client.get(f"/threads/{bad}").status_code == 404
    r = client.get(f"/threads/{bad}.json")
    assert r.status_code == 404
    assert r.json()["status"] == 404
    assert client.post(f"/threads/{bad}/pyspy").status_code == 404
    assert client.post(f"/threads/{bad}/pyspy.json").status_code == 404


def test_pyspy_is_post_only(client: TestClient, runtime: Runtime) -> None:
    """A GET to the dump route is 405: a dump pauses the process, links must not do it."""
    rid = runtime.threads["dbos-deadlines"].record.record_id
    assert client.get(f"/threads/{rid}/pyspy").status_code == 405


def test_pyspy_disabled_says_why(runtime: Runtime) -> None:
    """With allow_pyspy=False the button is disabled and a POST explains the reason."""
    rid = runtime.threads["dbos-deadlines"].record.record_id
    with TestClient(create_app(runtime.session, allow_pyspy=False)) as c:
        assert "disabled" in c.get(f"/threads/{rid}").text
        data = c.post(f"/threads/{rid}/pyspy.json").json()
        assert data["ok"] is False
        assert data["reason"] == "py-spy dumps are disabled for this dashboard"
        assert "py-spy dumps are disabled" in c.post(f"/threads/{rid}/pyspy").text


def test_pyspy_of_an_exited_thread_says_it_is_not_running(runtime: Runtime) -> None:
    """A dump of a thread that has exited is refused with the reason, not attempted."""
    s = runtime.spawn(ThreadKind.POLLER, "dbos-short-lived")
    s.stop.set()
    runtime.supervisor.reap(s, 5.0)
    with TestClient(create_app(runtime.session)) as c:
        data = c.post(f"/threads/{s.record.record_id}/pyspy.json").json()
    assert data["ok"] is False
    assert "is not running" in data["reason"]


def test_pyspy_dump_shows_native_frames_and_gil(client: TestClient, runtime: Runtime) -> None:
    """A POST takes a real py-spy dump and finds the thread in it, with GIL ownership."""
    rid = runtime.threads["dbos-deadlines"].record.record_id
    data = client.post(f"/threads/{rid}/pyspy.json").json()
    assert data["ok"] is True, data["reason"]
    assert data["thread"]["owns_gil"] in (True, False)
    assert data["thread"]["frames"]
    html = client.post(f"/threads/{rid}/pyspy").text
    assert 'id="pyspy-gil"' in html
    assert 'id="pyspy-frames"' in html


def test_locals_are_never_shown_even_when_captured(runtime: Runtime) -> None:
    """A stack captured with locals (a secret in one) shows its frames, never the locals."""
    s = runtime.threads["dbos-deadlines"]
    frames = [
        {
            "filename": "app.py",
            "lineno": 3,
            "function": "connect",
            "line": "db.connect(password)",
            "locals": {"password": "'hunter2'"},
        }
    ]
    runtime.registry.attach_stack(s.record, frames, "test")
    s.stop.set()
    runtime.supervisor.reap(s, 5.0)
    rid = s.record.record_id
    with TestClient(create_app(runtime.session)) as c:
        page = c.get(f"/threads/{rid}").text
        data = c.get(f"/threads/{rid}.json").json()
    assert "db.connect(password)" in page
    assert "Stack <small>(captured)</small>" in page
    assert "hunter2" not in page
    assert data["stack_source"] == "captured"
    assert "hunter2" not in str(data)
