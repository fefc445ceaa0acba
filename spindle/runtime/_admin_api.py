"""The DBOS 2.x admin endpoints, as a Starlette app (bad input is a 4xx, never a 500)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from spindle.diagnostics import ThreadGroup

from . import _admin_db, _workflows
from ._errors import DBOSException, DBOSNonExistentWorkflowError, DBOSNotLaunchedError
from ._queue import GLOBAL_QUEUES
from ._rows import now_ms
from ._status import WorkflowStatus

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("spindle")

Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """A request whose body or parameters are not what the endpoint takes."""


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


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc


def _field(body: Any, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool:
        raise BadRequest(f"{key!r} must be {kind}")
    if not isinstance(value, kind):
        raise BadRequest(f"{key!r} has the wrong type")
    return value


def _guard(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except DBOSNonExistentWorkflowError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except DBOSNotLaunchedError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        except (DBOSException, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return wrapped


def build_admin_app(rt: Runtime, dashboard: Starlette | None = None) -> Starlette:
    """The admin app, with the thread dashboard mounted under ``/dbos`` when given."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    async def deactivate(_: Request) -> Response:
        # Stop creating work here (pollers), keep finishing what runs: a drain before deploy.
        rt.supervisor.signal(ThreadGroup.POLLER)
        return PlainTextResponse("deactivated")

    async def queues_metadata(_: Request) -> Response:
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

    async def recovery(request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body, list) or not all(isinstance(x, str) for x in body):
            raise BadRequest("the body must be a JSON list of executor ids")
        handles = await run_in_threadpool(_workflows.recover_pending, rt, body)
        return JSONResponse([h.workflow_id for h in handles])

    async def list_workflows(request: Request) -> Response:
        body = await _body(request)
        limit = _field(body, "limit", int)
        offset = _field(body, "offset", int)
        if (limit is not None and limit < 0) or (offset is not None and offset < 0):
            raise BadRequest("limit and offset must be >= 0")
        statuses = await run_in_threadpool(
            lambda: _workflows.list_workflows(
                rt,
                workflow_ids=_field(body, "workflow_uuids", list),
                status=_field(body, "status", (str, list)),
                name=_field(body, "workflow_name", str),
                start_time=_field(body, "start_time", str),
                end_time=_field(body, "end_time", str),
                limit=limit,
                offset=offset,
                sort_desc=bool(_field(body, "sort_desc", bool, False)),
            )
        )
        return JSONResponse([workflow_json(s) for s in statuses])

    async def list_queued(request: Request) -> Response:
        body = await _body(request)
        queue_name = _field(body, "queue_name", str)
        name = _field(body, "workflow_name", str)
        limit = _field(body, "limit", int)
        # Filtered in SQL, so the limit counts queued workflows of that queue only.
        queued = await run_in_threadpool(
            lambda: _workflows.list_workflows(
                rt, queue_name=queue_name, name=name, limit=limit, queues_only=True
            )
        )
        return JSONResponse([workflow_json(s) for s in queued])

    async def get_workflow(request: Request) -> Response:
        wf_id = request.path_params["workflow_id"]
        status = await run_in_threadpool(_workflows.get_workflow_status, rt, wf_id)
        if status is None:
            raise DBOSNonExistentWorkflowError(wf_id)
        return JSONResponse(workflow_json(status))

    async def get_steps(request: Request) -> Response:
        wf_id = request.path_params["workflow_id"]
        if await run_in_threadpool(rt.sysdb.get_status, wf_id) is None:
            raise DBOSNonExistentWorkflowError(wf_id)
        return JSONResponse(await run_in_threadpool(_admin_db.list_steps, rt.sysdb, wf_id))

    async def cancel(request: Request) -> Response:
        await run_in_threadpool(_workflows.cancel_workflow, rt, request.path_params["workflow_id"])
        return Response(status_code=204)

    async def resume(request: Request) -> Response:
        await run_in_threadpool(_workflows.resume_workflow, rt, request.path_params["workflow_id"])
        return Response(status_code=204)

    async def fork(request: Request) -> Response:
        body = await _body(request)
        start_step = _field(body, "start_step", int, 1)
        if start_step < 1:
            raise BadRequest("start_step must be >= 1")
        new_id = await _fork(
            request.path_params["workflow_id"],
            start_step,
            _field(body, "new_workflow_id", str),
            _field(body, "application_version", str),
        )
        return JSONResponse({"workflow_id": new_id})

    async def restart(request: Request) -> Response:
        new_id = await _fork(request.path_params["workflow_id"], 1, None, None)
        return JSONResponse({"workflow_id": new_id})

    async def _fork(wf_id: str, start: int, new_id: str | None, version: str | None) -> str:
        def work() -> str:
            forked = _admin_db.fork_workflow(
                rt.sysdb,
                wf_id,
                start,
                executor_id=rt.config.executor_id,
                new_workflow_id=new_id,
                application_version=version,
            )
            if forked is None:
                raise DBOSNonExistentWorkflowError(wf_id)
            _workflows.restart(rt, forked, count_attempt=False)
            return forked

        return await run_in_threadpool(work)

    async def garbage_collect(request: Request) -> Response:
        body = await _body(request)
        cutoff = _field(body, "cutoff_epoch_timestamp_ms", int)
        threshold = _field(body, "rows_threshold", int)
        if threshold is not None and threshold < 0:
            raise BadRequest("rows_threshold must be >= 0")
        deleted = await run_in_threadpool(
            lambda: _admin_db.garbage_collect(
                rt.sysdb, cutoff_epoch_ms=cutoff, rows_threshold=threshold
            )
        )
        return JSONResponse({"deleted": deleted})

    async def global_timeout(request: Request) -> Response:
        body = await _body(request)
        cutoff = _field(body, "cutoff_epoch_timestamp_ms", int, now_ms())

        def work() -> list[str]:
            ids = _admin_db.global_timeout(rt.sysdb, cutoff)
            for wf_id in ids:
                entry = rt.active.get(wf_id)
                if entry is not None:
                    entry.cancel()
            return ids

        return JSONResponse({"cancelled": await run_in_threadpool(work)})

    routes: list[BaseRoute] = [
        Route("/dbos-healthz", _guard(healthz), methods=["GET"]),
        Route("/deactivate", _guard(deactivate), methods=["GET"]),
        Route("/dbos-workflow-queues-metadata", _guard(queues_metadata), methods=["GET"]),
        Route("/dbos-workflow-recovery", _guard(recovery), methods=["POST"]),
        Route("/workflows", _guard(list_workflows), methods=["POST"]),
        Route("/queues", _guard(list_queued), methods=["POST"]),
        Route("/dbos-garbage-collect", _guard(garbage_collect), methods=["POST"]),
        Route("/dbos-global-timeout", _guard(global_timeout), methods=["POST"]),
        Route("/workflows/{workflow_id}", _guard(get_workflow), methods=["GET"]),
        Route("/workflows/{workflow_id}/steps", _guard(get_steps), methods=["GET"]),
        Route("/workflows/{workflow_id}/cancel", _guard(cancel), methods=["POST"]),
        Route("/workflows/{workflow_id}/resume", _guard(resume), methods=["POST"]),
        Route("/workflows/{workflow_id}/restart", _guard(restart), methods=["POST"]),
        Route("/workflows/{workflow_id}/fork", _guard(fork), methods=["POST"]),
    ]
    if dashboard is None:
        return Starlette(routes=routes)
    routes.append(Mount("/dbos", app=dashboard))

    # Starlette runs no lifespan of a mounted app: forward it, so the dashboard's registry
    # listeners are installed at startup and removed when the server stops (phase 5).
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with dashboard.router.lifespan_context(dashboard):
            yield

    return Starlette(routes=routes, lifespan=lifespan)
