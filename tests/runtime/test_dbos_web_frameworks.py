"""``DBOS(fastapi=app)`` and ``DBOS(flask=app)`` on both backends: the lifespan launches and
destroys, the idempotency header names the workflow, request attributes on the handler's
span with the workflow's span under it, DBOS errors as DBOS's JSON; one real uvicorn run."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import fastapi
import flask
import httpx
import pytest
from fastapi.testclient import TestClient

from spindle import DBOS, DBOSContextSetAuth
from spindle.runtime import _current


@DBOS.workflow()
def web_workflow(x: int) -> dict[str, Any]:
    return {"x": x, "id": DBOS.workflow_id}


@DBOS.required_roles(["admin"])
@DBOS.workflow()
def web_admin_only() -> str:
    return "secret"


def _config(db_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "spindle-web-test",
        "system_database_url": db_url,
        "run_admin_server": False,
        "thread_join_timeout_sec": 10.0,
        **extra,
    }


def _fastapi_app() -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.get("/run/{x}")
    def run(x: int) -> dict[str, Any]:
        return web_workflow(x)

    @app.get("/admin")
    def admin() -> str:
        with DBOSContextSetAuth("mallory", ["guest"]):
            return web_admin_only()

    return app


@pytest.fixture
def destroyed() -> Iterator[None]:
    yield
    DBOS.destroy()


@pytest.mark.usefixtures("destroyed")
def test_fastapi_lifespan_header_spans_and_errors(db_url: str, spindle_span_exporter: Any) -> None:
    app = _fastapi_app()
    DBOS(fastapi=app, config=_config(db_url, enable_diagnostics=True))  # type: ignore[arg-type]
    rt = _current.get()
    assert not rt.launched
    with TestClient(app) as client:  # the app's lifespan launches DBOS
        assert rt.launched
        done = client.get("/run/3", headers={"dbos-idempotency-key": "web-1"})
        assert done.status_code == 200
        assert done.json() == {"x": 3, "id": "web-1"}
        again = client.get("/run/4", headers={"dbos-idempotency-key": "web-1"})
        assert again.json() == {"x": 3, "id": "web-1"}  # same key: the same workflow
        denied = client.get("/admin")
        assert denied.status_code == 403
        body = denied.json()
        assert body["dbos_error"] == "DBOSNotAuthorizedError"
        assert "not authenticated for any of them" in body["message"]
    assert rt.destroyed  # and its shutdown destroys it
    spans = spindle_span_exporter.get_finished_spans()
    handler = next(s for s in spans if s.name == "/run/3")
    assert handler.attributes["operationType"] == "handler"
    assert handler.attributes["requestMethod"] == "GET"
    assert handler.attributes["requestURL"].endswith("/run/3")
    assert handler.attributes["responseCode"] == 200
    assert handler.attributes["requestID"]
    workflow = next(s for s in spans if s.name == "web_workflow")
    assert workflow.parent is not None
    assert workflow.parent.span_id == handler.context.span_id


@pytest.mark.usefixtures("destroyed")
def test_dashboard_mounted_in_the_fastapi_app(db_url: str) -> None:
    """The thread dashboard mounts in the app before DBOS is launched (by the lifespan),
    behind its token, and shows the app's threads."""
    from spindle.web import create_app

    app = _fastapi_app()
    DBOS(fastapi=app, config=_config(db_url, enable_diagnostics=True))  # type: ignore[arg-type]
    app.mount("/dbos", create_app(DBOS.dashboard_source, admin_token="s3cret"))
    with TestClient(app) as client:
        assert client.get("/dbos/threads.json").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        threads = client.get("/dbos/threads.json", headers=auth)
        assert threads.status_code == 200
        names = {t["name"] for t in threads.json()["threads"]}
        assert "dbos-notification-listener" in names  # started by the lifespan's launch
        page = client.get("/dbos/threads", headers=auth)
        assert page.status_code == 200
        assert "dbos-notification-listener" in page.text


@pytest.mark.usefixtures("destroyed")
def test_flask_requests_run_as_handlers(db_url: str) -> None:
    app = flask.Flask(__name__)

    @app.get("/run/<int:x>")
    def run(x: int) -> dict[str, Any]:
        return web_workflow(x)

    DBOS(flask=app, config=_config(db_url))  # type: ignore[arg-type]
    DBOS.launch()  # Flask has no lifespan: the app launches, as in DBOS
    client = app.test_client()
    done = client.get("/run/5", headers={"dbos-idempotency-key": "flask-1"})
    assert done.status_code == 200
    assert done.get_json() == {"x": 5, "id": "flask-1"}
    status = DBOS.get_workflow_status("flask-1")
    assert status is not None
    assert status.status == "SUCCESS"


@pytest.mark.slow
@pytest.mark.usefixtures("destroyed")
def test_fastapi_under_a_real_uvicorn(db_url: str) -> None:
    import uvicorn

    app = _fastapi_app()
    DBOS(fastapi=app, config=_config(db_url))  # type: ignore[arg-type]
    # Our own listening socket on a free port: a request made before uvicorn serves waits
    # in its backlog (no polling for readiness).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn")
    serving.start()
    try:
        reply = httpx.get(
            f"http://127.0.0.1:{port}/run/7", headers={"dbos-idempotency-key": "uv-1"}, timeout=60
        )
        assert reply.json() == {"x": 7, "id": "uv-1"}
        assert _current.get().launched  # by the lifespan's startup
    finally:
        server.should_exit = True
        serving.join(30)
        sock.close()
    assert not serving.is_alive()
    assert _current.get().destroyed  # the lifespan's shutdown destroyed DBOS
