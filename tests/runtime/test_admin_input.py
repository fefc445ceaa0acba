"""The admin API's edge: what the database cannot store is a 400/413, a conflict a 409, a
missing workflow a 404, a failing database a 503; never a 500 or a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from spindle import DBOS
from spindle.runtime._admin_input import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    InputError,
    check_depth,
    parse_json,
)
from tests.conftest import MakeDBOS


@DBOS.step()
def edge_step(x: int) -> int:
    return x * 2


@DBOS.workflow()
def edge_workflow(x: int) -> int:
    return edge_step(x) + edge_step(x + 1)


@pytest.fixture
def admin(make_dbos: MakeDBOS) -> Iterator[httpx.Client]:
    make_dbos(run_admin_server=True, admin_port=0).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


def _status(r: httpx.Response, expected: int) -> str:
    assert r.status_code == expected, (r.request.method, r.request.url, r.status_code, r.text)
    assert "Traceback" not in r.text
    message: str = r.json()["error"]
    return message


def test_integers_must_fit_their_columns(admin: httpx.Client) -> None:
    """Huge or negative numbers are a 400 naming the field (were OverflowError / bigint out
    of range / integer out of range)."""
    wf = DBOS.start_workflow(edge_workflow, 1).workflow_id
    DBOS.retrieve_workflow(wf).get_result()
    cases = [
        ("/workflows", {"limit": 2**64}, "limit"),
        ("/workflows", {"offset": 2**63}, "offset"),
        ("/workflows", {"offset": -1}, "offset"),
        ("/queues", {"limit": 10**30}, "limit"),
        ("/dbos-garbage-collect", {"cutoff_epoch_timestamp_ms": 2**63}, "cutoff_epoch"),
        ("/dbos-garbage-collect", {"rows_threshold": -3}, "rows_threshold"),
        ("/dbos-global-timeout", {"cutoff_epoch_timestamp_ms": -(2**63) - 1}, "cutoff_epoch"),
        (f"/workflows/{wf}/fork", {"start_step": 2**31}, "start_step"),
        (f"/workflows/{wf}/fork", {"start_step": 0}, "start_step"),
        ("/workflows", {"limit": True}, "limit"),
        ("/workflows", {"limit": 1.5}, "limit"),
    ]
    for path, body, field in cases:
        assert field in _status(admin.post(path, json=body), 400), (path, body)
    # The largest values that fit are accepted.
    assert admin.post("/workflows", json={"limit": 2**63 - 1, "offset": 0}).status_code == 200
    ok = admin.post(f"/workflows/{wf}/fork", json={"start_step": 2**31 - 1})
    assert ok.status_code == 200


def test_ids_and_strings_are_checked(admin: httpx.Client) -> None:
    """NUL, lone surrogates, empty IDs and non-strings are 400s on both databases."""
    wf = DBOS.start_workflow(edge_workflow, 1).workflow_id
    DBOS.retrieve_workflow(wf).get_result()
    for path in ["/workflows/%00", "/workflows/a%00b/steps"]:
        _status(admin.get(path), 400)
    for action in ["cancel", "resume", "restart", "fork"]:
        _status(admin.post(f"/workflows/%00/{action}"), 400)
    _status(admin.post("/workflows", json={"status": [1, 2]}), 400)
    _status(admin.post("/workflows", json={"workflow_uuids": [1, 2]}), 400)
    _status(admin.post("/workflows", json={"workflow_uuids": "abc"}), 400)
    _status(admin.post("/workflows", json={"workflow_name": "a\x00b"}), 400)
    lone = b'{"workflow_name": "\\ud800"}'
    _status(admin.post("/workflows", content=lone), 400)
    _status(admin.post(f"/workflows/{wf}/fork", json={"new_workflow_id": ""}), 400)
    _status(admin.post("/dbos-workflow-recovery", json=["local", 3]), 400)
    _status(admin.post("/dbos-workflow-recovery", json={"a": 1}), 400)
    _status(admin.get("/workflows/" + "x" * 5000), 400)
    # Unknown fields are ignored, as DBOS ignores them.
    assert admin.post("/workflows", json={"whatever": [1]}).status_code == 200


def test_bodies_too_big_or_too_deep_are_refused_before_parsing(admin: httpx.Client) -> None:
    """A 10 MB body is a 413 (declared or streamed); 5,000 ``[`` is a 400 (was RecursionError)."""
    big = b" " * (10 * 1024 * 1024)
    _status(admin.post("/workflows", content=big), 413)

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b" " * MAX_BODY_BYTES

    streamed = admin.post("/workflows", content=chunks())
    assert streamed.status_code == 413
    assert "deeper" in _status(admin.post("/workflows", content=b"[" * 5000), 400)
    assert "deeper" in _status(admin.post("/dbos-workflow-recovery", content=b"{" * 5000), 400)
    _status(admin.post("/workflows", content=b'{"limit": NaN}'), 400)
    _status(admin.post("/workflows", content=b'{"limit": ' + b"9" * 5000 + b"}"), 400)
    _status(admin.post("/workflows", content=b"\xff\xfe"), 400)


def test_depth_check_skips_brackets_inside_strings() -> None:
    """Brackets in strings do not count; real nesting at the limit passes."""
    assert parse_json(b'{"a": "' + b"[" * 1000 + b'"}') == {"a": "[" * 1000}
    check_depth(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    with pytest.raises(InputError):
        check_depth(b"[" * (MAX_JSON_DEPTH + 1))
    escaped = b'["\\"' + b"[" * 100 + b'"]'
    assert parse_json(escaped) == ['"' + "[" * 100]


def test_domain_conflicts_are_4xx(admin: httpx.Client) -> None:
    """Fork onto an existing ID is 409 (was IntegrityError/UniqueViolation); a missing
    workflow is 404 on every route that names one."""
    a = DBOS.start_workflow(edge_workflow, 1).workflow_id
    b = DBOS.start_workflow(edge_workflow, 2).workflow_id
    DBOS.retrieve_workflow(a).get_result()
    DBOS.retrieve_workflow(b).get_result()
    message = _status(admin.post(f"/workflows/{a}/fork", json={"new_workflow_id": b}), 409)
    assert b in message
    assert len(DBOS.list_workflows()) == 2
    forked = admin.post(f"/workflows/{a}/fork", json={"new_workflow_id": "fresh"})
    assert forked.json() == {"workflow_id": "fresh"}
    assert DBOS.retrieve_workflow("fresh").get_result() == 2 + 4
    for method, path in [
        ("GET", "/workflows/nope"),
        ("GET", "/workflows/nope/steps"),
        ("POST", "/workflows/nope/cancel"),
        ("POST", "/workflows/nope/resume"),
        ("POST", "/workflows/nope/restart"),
        ("POST", "/workflows/nope/fork"),
    ]:
        assert "nope" in _status(admin.request(method, path), 404)


def test_a_failing_database_is_a_503_logged_once(
    admin: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid request the database cannot serve is 503 with Retry-After and one log line
    without a traceback; once the database is back the same request succeeds."""
    wf = DBOS.start_workflow(edge_workflow, 1).workflow_id
    DBOS.retrieve_workflow(wf).get_result()
    sysdb = DBOS.runtime.sysdb
    table = "workflow_status" if sysdb.url.startswith("sqlite") else "dbos.workflow_status"
    # A real database error, not a mock: the table the query needs is gone for a moment.
    with sysdb.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO workflow_status_away")
    caplog.set_level(logging.WARNING, logger="spindle")
    try:
        for _ in range(3):
            r = admin.get(f"/workflows/{wf}")
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.json() == {"error": "the system database is unavailable; retry later"}
    finally:
        away = (
            "workflow_status_away"
            if sysdb.url.startswith("sqlite")
            else "dbos.workflow_status_away"
        )
        with sysdb.engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {away} RENAME TO workflow_status")
    lines = [r for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None
    assert admin.get(f"/workflows/{wf}").json()["Status"] == "SUCCESS"


def test_after_destroy_the_api_answers_503(make_dbos: MakeDBOS) -> None:
    """A closed system database is "retry later", not a 500 (the app is shutting down)."""
    make_dbos(run_admin_server=False).launch()
    from starlette.testclient import TestClient

    from spindle.runtime._admin_api import build_admin_app

    app = build_admin_app(DBOS.runtime)
    rt = DBOS.runtime
    DBOS.destroy()
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = c.post("/workflows", json={})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert rt.destroyed
