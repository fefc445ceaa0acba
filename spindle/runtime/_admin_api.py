"""The DBOS 2.x admin endpoints, as a Starlette app behind one auth layer (bad input is a
4xx, a database failure a 503, never a 500)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from spindle.diagnostics import ThreadGroup
from spindle.web._auth import LOOPBACK_HOSTS, AdminAuth, is_loopback

from . import _admin_db, _management, _workflows
from ._admin import ManagementGate
from ._admin_input import (
    BOOL,
    ID,
    IDS,
    INT32_MAX,
    INT64,
    MAX_BODY_BYTES,
    NON_NEGATIVE,
    TEXT,
    TEXT_OR_TEXTS,
    Body,
    Field,
    InputError,
    check_id,
)
from ._errors import (
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSNotLaunchedError,
    DBOSRuntimeShutdownError,
    DBOSWorkflowConflictIDError,
    DBOSWorkflowFunctionNotFoundError,
)
from ._metrics import metrics_route
from ._queue import GLOBAL_QUEUES
from ._rows import now_ms
from ._status import WorkflowStatus

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

HEALTHZ = "/dbos-healthz"
#: Where the dashboard is mounted, and where the login form lives.
DASHBOARD_PREFIX = "/dbos"


def workflow_json(s: WorkflowStatus) -> dict[str, Any]:
    """A workflow as the DBOS admin API shows it: DBOS 2.30's field names, numbers and
    values as strings (None stays null), ``WasForkedFrom`` a bool, ``Attributes`` JSON."""

    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return {
        "WorkflowUUID": s.workflow_id,
        "Status": s.status,
        "WorkflowName": s.name,
        "WorkflowClassName": s.class_name,
        "WorkflowConfigName": s.config_name,
        "AuthenticatedUser": s.authenticated_user,
        "AssumedRole": s.assumed_role,
        "AuthenticatedRoles": text(s.authenticated_roles),
        "Input": text(s.input),
        "Output": text(s.output),
        "Error": text(s.error),
        "CreatedAt": text(s.created_at),
        "UpdatedAt": text(s.updated_at),
        "QueueName": s.queue_name,
        "ApplicationVersion": s.app_version,
        "ExecutorID": s.executor_id,
        "RecoveryAttempts": s.recovery_attempts,
        "ParentWorkflowID": s.parent_workflow_id,
        "WorkflowTimeoutMS": text(s.workflow_timeout_ms),
        "WorkflowDeadlineEpochMS": text(s.workflow_deadline_epoch_ms),
        "DeduplicationID": s.deduplication_id,
        "Priority": text(s.priority),
        "QueuePartitionKey": s.queue_partition_key,
        "ForkedFrom": s.forked_from,
        "WasForkedFrom": s.was_forked_from,
        "DequeuedAt": text(s.dequeued_at),
        "DelayUntilEpochMS": text(s.delay_until_epoch_ms),
        "CompletedAt": text(s.completed_at),
        "Attributes": json.dumps(s.attributes) if s.attributes is not None else None,
        "ScheduleName": s.schedule_name,
        "ApplicationName": s.application_name,
    }


@dataclass(frozen=True, slots=True)
class Call:
    """A request that passed the edge: its workflow ID (if the path has one) and its body."""

    request: Request
    workflow_id: str
    body: Any


Handler = Callable[[Call], Awaitable[Response]]

#: What each route's body may hold, in one table (unknown fields are ignored, as DBOS does).
BODIES: dict[str, Body] = {
    "/dbos-workflow-recovery": Body(id_list=True),
    "/workflows": Body(
        {
            "workflow_uuids": IDS,
            "status": TEXT_OR_TEXTS,
            "workflow_name": TEXT,
            "start_time": TEXT,
            "end_time": TEXT,
            "limit": NON_NEGATIVE,
            "offset": NON_NEGATIVE,
            "sort_desc": BOOL,
        }
    ),
    "/queues": Body({"queue_name": TEXT, "workflow_name": TEXT, "limit": NON_NEGATIVE}),
    "/dbos-garbage-collect": Body(
        {"cutoff_epoch_timestamp_ms": INT64, "rows_threshold": NON_NEGATIVE}
    ),
    "/dbos-global-timeout": Body({"cutoff_epoch_timestamp_ms": INT64}),
    "/workflows/{workflow_id}/fork": Body(
        {
            "start_step": Field("int", minimum=1, maximum=INT32_MAX),
            "new_workflow_id": ID,
            "application_version": TEXT,
        }
    ),
}

#: Seconds a client is told to wait after a 503 (the database was unreachable).
RETRY_AFTER_SEC = 1
#: A repeated database error is logged again only after this long (a polling client would
#: otherwise write one line per request while the database is down).
LOG_REPEAT_SEC = 30.0
_last_logged: dict[str, float] = {}


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (chunked bodies too)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _database_unavailable(route: str, request: Request, exc: BaseException) -> Response:
    # Keyed by route template, not path: the dict stays as small as the route table.
    key = f"{route}:{type(exc).__name__}"
    now = time.monotonic()
    if now - _last_logged.get(key, -LOG_REPEAT_SEC) >= LOG_REPEAT_SEC:
        _last_logged[key] = now
        # One line, no traceback: the request was valid and the cause is the database.
        logger.warning(
            "spindle: admin %s %s answered 503, the system database failed: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
    return _error(
        503,
        "the system database is unavailable; retry later",
        {"Retry-After": str(RETRY_AFTER_SEC)},
    )


def _edge(path: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Validate the path ID and the body as declared in BODIES, then map errors to statuses.

    The mapping is the one place an exception becomes an HTTP status: input 400/413,
    missing workflow 404, an ID taken 409, a database failure on a valid request 503.
    """
    body_spec = BODIES.get(path)
    has_id = "{workflow_id}" in path

    async def endpoint(request: Request) -> Response:
        try:
            wf_id = check_id(request.path_params["workflow_id"]) if has_id else ""
            body = body_spec.parse(await read_body(request)) if body_spec is not None else None
            return await handler(Call(request, wf_id, body))
        except InputError as exc:
            return _error(exc.status, exc.message)
        except DBOSNonExistentWorkflowError as exc:
            return _error(404, str(exc))
        except (DBOSWorkflowConflictIDError, sa.exc.IntegrityError) as exc:
            # IntegrityError: another request took the same new ID between check and insert.
            # (DBOSWorkflowConflictIDError is a DBOS BaseException, not a DBOSException.)
            taken = isinstance(exc, DBOSWorkflowConflictIDError)
            message = str(exc) if taken else "the workflow ID is taken"
            return _error(409, message)
        except DBOSWorkflowFunctionNotFoundError as exc:
            return _error(409, str(exc))
        except (DBOSNotLaunchedError, DBOSRuntimeShutdownError) as exc:
            return _error(503, str(exc), {"Retry-After": str(RETRY_AFTER_SEC)})
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            return _database_unavailable(path, request, exc)
        except (DBOSException, ValueError) as exc:
            return _error(400, str(exc))

    return endpoint


def build_admin_app(rt: Runtime, dashboard: Starlette | None = None) -> Starlette:
    """The admin app, with the thread dashboard mounted under ``/dbos`` when given.

    Everything it serves, now or added later, sits behind one :class:`AdminAuth` layer
    (``admin_token``; ``/dbos-healthz`` stays open while ``admin_healthz_public``).
    """

    async def healthz(_: Call) -> Response:
        # DBOS's body, byte for byte: probes and scripts written for DBOS compare it.
        return PlainTextResponse("healthy")

    async def deactivate(_: Call) -> Response:
        # Stop creating work here (pollers), keep finishing what runs: a drain before deploy.
        rt.supervisor.signal(ThreadGroup.POLLER)
        return PlainTextResponse("deactivated")

    async def queues_metadata(_: Call) -> Response:
        return JSONResponse(
            [
                {
                    "name": q.name,
                    "concurrency": q.concurrency,
                    "workerConcurrency": q.worker_concurrency,
                    "rateLimit": dict(q.limiter) if q.limiter is not None else None,
                    "priorityEnabled": q.priority_enabled,
                    "pollingIntervalSec": q.polling_interval_sec,
                }
                for q in GLOBAL_QUEUES.all()
            ]
        )

    async def recovery(call: Call) -> Response:
        handles = await run_in_threadpool(_workflows.recover_pending, rt, call.body)
        return JSONResponse([h.workflow_id for h in handles])

    async def list_workflows(call: Call) -> Response:
        b = call.body
        statuses = await run_in_threadpool(
            lambda: _workflows.list_workflows(
                rt,
                workflow_ids=b.get("workflow_uuids"),
                status=b.get("status"),
                name=b.get("workflow_name"),
                start_time=b.get("start_time"),
                end_time=b.get("end_time"),
                limit=b.get("limit"),
                offset=b.get("offset"),
                sort_desc=b.get("sort_desc", False),
            )
        )
        return JSONResponse([workflow_json(s) for s in statuses])

    async def list_queued(call: Call) -> Response:
        b = call.body
        # Filtered in SQL, so the limit counts queued workflows of that queue only.
        queued = await run_in_threadpool(
            lambda: _workflows.list_workflows(
                rt,
                queue_name=b.get("queue_name"),
                name=b.get("workflow_name"),
                limit=b.get("limit"),
                queues_only=True,
            )
        )
        return JSONResponse([workflow_json(s) for s in queued])

    async def get_workflow(call: Call) -> Response:
        status = await run_in_threadpool(_workflows.get_workflow_status, rt, call.workflow_id)
        if status is None:
            raise DBOSNonExistentWorkflowError(call.workflow_id)
        return JSONResponse(workflow_json(status))

    async def get_steps(call: Call) -> Response:
        if await run_in_threadpool(rt.sysdb.get_status, call.workflow_id) is None:
            raise DBOSNonExistentWorkflowError(call.workflow_id)
        steps = await run_in_threadpool(_admin_db.list_steps, rt.sysdb, call.workflow_id)
        return JSONResponse(steps)

    # The runtime's management operations (_management), as the facade and the conductor
    # run them; only the DBOS admin JSON is this module's.
    async def cancel(call: Call) -> Response:
        await run_in_threadpool(_management.cancel, rt, call.workflow_id)
        return Response(status_code=204)

    async def resume(call: Call) -> Response:
        await run_in_threadpool(_management.resume, rt, call.workflow_id)
        return Response(status_code=204)

    async def fork(call: Call) -> Response:
        b = call.body
        new_id = await run_in_threadpool(
            lambda: _management.fork(
                rt,
                call.workflow_id,
                b.get("start_step", 1),
                new_workflow_id=b.get("new_workflow_id"),
                application_version=b.get("application_version"),
            )
        )
        return JSONResponse({"workflow_id": new_id})

    async def restart(call: Call) -> Response:
        new_id = await run_in_threadpool(_management.restart, rt, call.workflow_id)
        return JSONResponse({"workflow_id": new_id})

    async def garbage_collect(call: Call) -> Response:
        b = call.body
        deleted = await run_in_threadpool(
            lambda: _admin_db.garbage_collect(
                rt.sysdb,
                cutoff_epoch_ms=b.get("cutoff_epoch_timestamp_ms"),
                rows_threshold=b.get("rows_threshold"),
            )
        )
        rt.active.forget_finished()  # rows are gone: handles read the database again
        return JSONResponse({"deleted": deleted})

    async def global_timeout(call: Call) -> Response:
        cutoff = call.body.get("cutoff_epoch_timestamp_ms", now_ms())

        def work() -> list[str]:
            ids = _admin_db.global_timeout(rt.sysdb, cutoff)
            for wf_id in ids:
                entry = rt.active.get(wf_id)
                if entry is not None:
                    entry.cancel()
            return ids

        return JSONResponse({"cancelled": await run_in_threadpool(work)})

    table: list[tuple[str, str, Handler]] = [
        ("GET", "/dbos-healthz", healthz),
        ("GET", "/deactivate", deactivate),
        ("GET", "/dbos-workflow-queues-metadata", queues_metadata),
        ("POST", "/dbos-workflow-recovery", recovery),
        ("POST", "/workflows", list_workflows),
        ("POST", "/queues", list_queued),
        ("POST", "/dbos-garbage-collect", garbage_collect),
        ("POST", "/dbos-global-timeout", global_timeout),
        ("GET", "/workflows/{workflow_id}", get_workflow),
        ("GET", "/workflows/{workflow_id}/steps", get_steps),
        ("POST", "/workflows/{workflow_id}/cancel", cancel),
        ("POST", "/workflows/{workflow_id}/resume", resume),
        ("POST", "/workflows/{workflow_id}/restart", restart),
        ("POST", "/workflows/{workflow_id}/fork", fork),
    ]
    routes: list[BaseRoute] = [
        Route(path, _edge(path, handler), methods=[method]) for method, path, handler in table
    ]
    routes.append(Route("/metrics", metrics_route(rt), methods=["GET"]))
    public = [HEALTHZ] if rt.config.admin_healthz_public else []
    host = rt.config.admin_host.lower()
    middleware = [
        Middleware(
            AdminAuth,
            token=rt.config.admin_token,
            prefix=DASHBOARD_PREFIX,
            public=public,
            unsafe_gets=["/deactivate"],
            home="/threads" if dashboard is not None else None,
            # Bound to loopback: only loopback names in Host (DNS rebinding). Bound to a
            # wider address: any name, since proxies and DNS names lead to it.
            hosts=LOOPBACK_HOSTS | {host} if is_loopback(host) else None,
        ),
        # Inside the authentication layer: after phase 5 the management routes answer 503,
        # but only to a caller the layer let through.
        Middleware(
            ManagementGate,
            is_closed=lambda: rt.admin is not None and rt.admin.management_closed,
        ),
    ]
    if dashboard is None:
        return Starlette(routes=routes, middleware=middleware)
    routes.append(Mount(DASHBOARD_PREFIX, app=dashboard))

    # Starlette runs no lifespan of a mounted app: forward it, so the dashboard's registry
    # listeners are installed at startup and removed when the server stops (phase 5).
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with dashboard.router.lifespan_context(dashboard):
            yield

    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
