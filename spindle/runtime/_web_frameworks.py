"""``DBOS(fastapi=app)`` and ``DBOS(flask=app)``, as DBOS integrates them.

Each request runs as a DBOS handler: a ``dbos-idempotency-key`` header becomes the ID of
the workflow the handler starts (``SetWorkflowID``), and with diagnostics on the request is
a span (``operationType`` ``handler``, DBOS's ``requestID``/``requestIP``/``requestURL``/
``requestMethod`` attributes, ``responseCode``) under which the workflows it starts nest.
FastAPI: the app's lifespan launches DBOS at startup and destroys it at shutdown, and a
``DBOSException`` becomes DBOS's JSON error response. Flask (WSGI, no lifespan): call
``DBOS.launch()`` yourself, as in DBOS. FastAPI and Flask are optional extras: imported only
when given.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from . import _current
from ._context import SetWorkflowID
from ._errors import DBOSException

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from spindle.diagnostics import ShutdownTimeline, ThreadRegistry

    from ._runtime import Runtime

REQUEST_ID_HEADER = "x-request-id"
IDEMPOTENCY_HEADER = "dbos-idempotency-key"


@contextlib.contextmanager
def handler(
    path: str, headers: Any, ip: str | None, url: str, method: str
) -> Iterator[Span | None]:
    """The request as a DBOS handler: its span (diagnostics on) and its workflow ID."""
    rt = _current.peek()
    tracer = rt.op_tracer if rt is not None else None
    started = None
    if tracer is not None:
        attributes = {
            "requestID": headers.get(REQUEST_ID_HEADER) or str(uuid.uuid4()),
            "requestIP": ip,
            "requestURL": url,
            "requestMethod": method,
        }
        started = tracer.start_handler(path, attributes)
    error: BaseException | None = None
    try:
        workflow_id = headers.get(IDEMPOTENCY_HEADER)
        with SetWorkflowID(workflow_id) if workflow_id else contextlib.nullcontext():
            yield started[0] if started is not None else None
    except BaseException as exc:
        error = exc
        raise
    finally:
        if tracer is not None:
            tracer.end(started, error)


def setup_fastapi(app: Any, launch: Callable[[], None], destroy: Callable[[], None]) -> None:
    """Install the lifespan hooks, the error handler and the handler middleware."""
    from fastapi.responses import JSONResponse  # the ``fastapi`` extra

    class LifespanHooks:
        """Launch DBOS once the app started, destroy it once the app stopped."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "lifespan":
                await self.inner(scope, receive, send)
                return

            async def hooked(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "lifespan.startup.complete":
                    launch()
                elif message["type"] == "lifespan.shutdown.complete":
                    destroy()
                await send(message)

            await self.inner(scope, receive, hooked)

    async def dbos_error(request: Any, exc: Exception) -> Any:
        error = exc if isinstance(exc, DBOSException) else DBOSException(str(exc))
        status = getattr(error, "status_code", None) or 500
        return JSONResponse(
            status_code=status,
            content={
                "message": str(getattr(error, "message", error)),
                "dbos_error_code": str(error.dbos_error_code),
                "dbos_error": type(error).__name__,
            },
        )

    app.add_middleware(LifespanHooks)
    app.add_exception_handler(DBOSException, dbos_error)

    async def dbos_handler(request: Any, call_next: Any) -> Any:
        client = request.client.host if request.client is not None else None
        with handler(
            str(request.url.path), request.headers, client, str(request.url), request.method
        ) as span:
            response = await call_next(request)
            if span is not None:
                span.set_attribute("responseCode", response.status_code)
        return response

    app.middleware("http")(dbos_handler)


def setup_flask(app: Any) -> None:
    """Wrap the WSGI app so each request runs as a DBOS handler."""
    from werkzeug.wrappers import Request  # Flask's

    inner = app.wsgi_app

    def wsgi(environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        codes: list[int] = []

        def recording(status: str, headers: Any, *rest: Any) -> Any:
            codes.append(int(status.split(" ", 1)[0]))
            return start_response(status, headers, *rest)

        with handler(
            request.path, request.headers, request.remote_addr, request.url, request.method
        ) as span:
            body = inner(environ, recording)
            if span is not None and codes:
                span.set_attribute("responseCode", codes[0])
        return body

    app.wsgi_app = wsgi


class RuntimeDashboardSource:
    """The dashboard's read-only view of an app, valid before its launch: so
    ``app.mount("/dbos", create_app(DBOS.dashboard_source))`` works in a FastAPI app whose
    lifespan launches DBOS later (``DBOS.diagnostics`` exists only once launched)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    @property
    def registry(self) -> ThreadRegistry:
        """The app's thread registry (made with the app, before launch)."""
        return self._rt.registry

    @property
    def service_name(self) -> str:
        """The app's name."""
        return self._rt.config.name

    def timelines(self) -> list[ShutdownTimeline]:
        """The shutdown timelines of the current diagnostics session (none before launch)."""
        diag = self._rt.diag
        return list(diag.timelines) if diag is not None else []

    @property
    def stuck_grace_sec(self) -> float:
        """The grace before a signalled thread counts as stuck (the lints use it)."""
        return self._rt.config.diagnostics_stuck_grace_sec
