"""``DBOS``'s workflow introspection and management names (DBOS 2.30), as a base class of
the facade: status, lists, steps, results, first-of-many, cancel/resume/delete in bulk, fork.

Each name validates and delegates to ``_introspection`` / ``_workflows``. Reads made inside
a workflow are recorded as steps under DBOS's step names (``DBOS.getStatus``, ...), so a
replayed workflow sees what its first run saw. The ``_async`` twins of short database calls
run them on the caller's loop, as the rest of the facade does; the twins that wait
(``get_result_async``, ``wait_first_async``) hold no thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Unpack

from . import _current, _durable, _introspection, _management, _workflows
from ._attributes import replace as replace_attributes
from ._attributes import validate as validate_attributes
from ._context import next_workflow_id
from ._errors import (
    DBOSRuntimeShutdownError,
)
from ._handles import WorkflowHandle, WorkflowHandleAsync
from ._introspection import StepInfo, WorkflowFilters
from ._runtime import Runtime
from ._status import WorkflowStatus

#: DBOS's default polling interval of ``wait_first`` (seconds).
DEFAULT_POLLING_INTERVAL = 1.0


def _rt() -> Runtime:
    rt = _current.get()
    rt.require_launched()
    return rt


def _wait_first_id(rt: Runtime, ids: list[str], interval: float) -> str:
    wake = threading.Event()
    for wf_id in ids:
        entry = rt.active.get(wf_id)
        if entry is not None:
            # One ending in this process wakes the wait at once, not at the next poll.
            entry.add_done_callback(wake.set)
    while True:
        first = _management.first_ended(rt.sysdb, ids)
        if first is not None:
            return first
        if rt.stopping.is_set():
            with _durable.shutdown_unrecorded():  # inside the step: never its recorded error
                raise DBOSRuntimeShutdownError("the runtime shut down while waiting in wait_first")
        wake.wait(interval)
        wake.clear()


def _fork(
    rt: Runtime,
    workflow_id: str,
    start_step: int,
    application_version: str | None,
    queue_name: str | None,
    queue_partition_key: str | None,
    timeout_seconds: float | None,
) -> str:
    new_id = next_workflow_id.get()
    if new_id is not None:
        next_workflow_id.set(None)  # SetWorkflowID names the fork, as in DBOS
    return _management.fork(
        rt,
        workflow_id,
        start_step,
        new_workflow_id=new_id,
        application_version=application_version,
        queue_name=queue_name,
        queue_partition_key=queue_partition_key,
        timeout_seconds=timeout_seconds,
    )


class WorkflowAPI:
    """The introspection and management classmethods of ``DBOS``."""

    @classmethod
    def get_workflow_status(cls, workflow_id: str) -> WorkflowStatus | None:
        """The status of a workflow, with every DBOS field, or None."""
        rt = _rt()
        return _durable.call(rt, "DBOS.getStatus", _introspection.workflow_status, rt, workflow_id)

    @classmethod
    async def get_workflow_status_async(cls, workflow_id: str) -> WorkflowStatus | None:
        """Async :meth:`get_workflow_status`."""
        return cls.get_workflow_status(workflow_id)

    @classmethod
    def list_workflows(cls, **filters: Unpack[WorkflowFilters]) -> list[WorkflowStatus]:
        """Workflows matching every given DBOS filter (times as ISO 8601), oldest first."""
        rt = _rt()
        return _durable.call(rt, "DBOS.listWorkflows", _introspection.list_workflows, rt, filters)

    @classmethod
    async def list_workflows_async(cls, **filters: Unpack[WorkflowFilters]) -> list[WorkflowStatus]:
        """Async :meth:`list_workflows`."""
        return cls.list_workflows(**filters)

    @classmethod
    def list_queued_workflows(cls, **filters: Unpack[WorkflowFilters]) -> list[WorkflowStatus]:
        """Workflows of a queue still in it (ENQUEUED or PENDING unless ``status`` is given)."""
        rt = _rt()

        def queued(rt: Runtime, given: WorkflowFilters) -> list[WorkflowStatus]:
            return _introspection.list_workflows(rt, given, queues_only=True)

        return _durable.call(rt, "DBOS.listQueuedWorkflows", queued, rt, filters)

    @classmethod
    async def list_queued_workflows_async(
        cls, **filters: Unpack[WorkflowFilters]
    ) -> list[WorkflowStatus]:
        """Async :meth:`list_queued_workflows`."""
        return cls.list_queued_workflows(**filters)

    @classmethod
    def list_workflow_steps(
        cls,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[StepInfo]:
        """The recorded steps of a workflow, in order (DBOS's ``StepInfo`` dicts)."""
        rt = _rt()

        def steps(rt: Runtime, wf_id: str) -> list[StepInfo]:
            return _introspection.list_steps(
                rt, wf_id, load_output=load_output, limit=limit, offset=offset
            )

        return _durable.call(rt, "DBOS.listWorkflowSteps", steps, rt, workflow_id)

    @classmethod
    async def list_workflow_steps_async(
        cls,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[StepInfo]:
        """Async :meth:`list_workflow_steps`."""
        return cls.list_workflow_steps(
            workflow_id, load_output=load_output, limit=limit, offset=offset
        )

    @classmethod
    def get_result(cls, workflow_id: str) -> Any:
        """Wait for a workflow and return its result (or raise its error); a
        ``DBOS.getResult`` step inside a workflow."""
        return _workflows.handle(_rt(), workflow_id).get_result()

    @classmethod
    async def get_result_async(cls, workflow_id: str) -> Any:
        """Await a workflow's result, holding no thread."""
        rt = _rt()
        return await WorkflowHandleAsync[Any](
            rt, workflow_id, rt.active.get(workflow_id)
        ).get_result()

    @classmethod
    def wait_first(
        cls,
        handles: list[WorkflowHandle[Any]],
        *,
        polling_interval_sec: float = DEFAULT_POLLING_INTERVAL,
    ) -> WorkflowHandle[Any]:
        """The first of ``handles`` whose workflow ended (success, error or cancelled)."""
        ids = _management.check_handles(handles)
        rt = _rt()
        first = _durable.call(rt, "DBOS.waitFirst", _wait_first_id, rt, ids, polling_interval_sec)
        return {h.workflow_id: h for h in handles}[first]

    @classmethod
    async def wait_first_async(
        cls,
        handles: list[WorkflowHandleAsync[Any]],
        *,
        polling_interval_sec: float = DEFAULT_POLLING_INTERVAL,
    ) -> WorkflowHandleAsync[Any]:
        """Async :meth:`wait_first`: waits on the loop, holding no thread."""
        ids = _management.check_handles(handles)
        rt = _rt()
        loop = asyncio.get_running_loop()

        async def first_id() -> str:
            wake = asyncio.Event()

            def wake_threadsafe() -> None:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(wake.set)

            for wf_id in ids:
                entry = rt.active.get(wf_id)
                if entry is not None:
                    entry.add_done_callback(wake_threadsafe)
            while True:
                first = _management.first_ended(rt.sysdb, ids)
                if first is not None:
                    return first
                if rt.stopping.is_set():
                    with _durable.shutdown_unrecorded():
                        raise DBOSRuntimeShutdownError(
                            "the runtime shut down while waiting in wait_first"
                        )
                try:
                    await asyncio.wait_for(wake.wait(), polling_interval_sec)
                except TimeoutError:
                    pass
                wake.clear()

        first = await _durable.call_async(rt, "DBOS.waitFirst", first_id)
        return {h.workflow_id: h for h in handles}[first]

    @classmethod
    def cancel_workflow(cls, workflow_id: str, *, cancel_children: bool = False) -> None:
        """Cancel a workflow (and with ``cancel_children`` its descendants): it stops at its
        next step; waiters get ``DBOSAwaitedWorkflowCancelledError``."""
        rt = _rt()
        _durable.call(
            rt, "DBOS.cancelWorkflow", _management.cancel, rt, workflow_id, cancel_children
        )

    @classmethod
    async def cancel_workflow_async(
        cls, workflow_id: str, *, cancel_children: bool = False
    ) -> None:
        """Async :meth:`cancel_workflow`."""
        cls.cancel_workflow(workflow_id, cancel_children=cancel_children)

    @classmethod
    def cancel_workflows(cls, workflow_ids: list[str], *, cancel_children: bool = False) -> None:
        """Cancel several workflows."""
        for wf_id in workflow_ids:
            cls.cancel_workflow(wf_id, cancel_children=cancel_children)

    @classmethod
    async def cancel_workflows_async(
        cls, workflow_ids: list[str], *, cancel_children: bool = False
    ) -> None:
        """Async :meth:`cancel_workflows`."""
        cls.cancel_workflows(workflow_ids, cancel_children=cancel_children)

    @classmethod
    def resume_workflow(
        cls, workflow_id: str, *, queue_name: str | None = None
    ) -> WorkflowHandle[Any]:
        """Resume a cancelled or failed workflow from its last completed step (a queued one,
        or any with ``queue_name``, goes back to a queue, under its limits)."""
        rt = _rt()
        _durable.call(rt, "DBOS.resumeWorkflow", _management.resume, rt, workflow_id, queue_name)
        return _workflows.handle(rt, workflow_id)

    @classmethod
    async def resume_workflow_async(
        cls, workflow_id: str, *, queue_name: str | None = None
    ) -> WorkflowHandleAsync[Any]:
        """Async :meth:`resume_workflow`."""
        handle = cls.resume_workflow(workflow_id, queue_name=queue_name)
        return WorkflowHandleAsync(_rt(), handle.workflow_id, None)

    @classmethod
    def resume_workflows(
        cls, workflow_ids: list[str], *, queue_name: str | None = None
    ) -> list[WorkflowHandle[Any]]:
        """Resume several workflows."""
        return [cls.resume_workflow(i, queue_name=queue_name) for i in workflow_ids]

    @classmethod
    async def resume_workflows_async(
        cls, workflow_ids: list[str], *, queue_name: str | None = None
    ) -> list[WorkflowHandleAsync[Any]]:
        """Async :meth:`resume_workflows`."""
        return [await cls.resume_workflow_async(i, queue_name=queue_name) for i in workflow_ids]

    @classmethod
    def delete_workflow(cls, workflow_id: str, *, delete_children: bool = False) -> None:
        """Delete a workflow and everything recorded about it (a missing one is no error)."""
        cls.delete_workflows([workflow_id], delete_children=delete_children)

    @classmethod
    async def delete_workflow_async(
        cls, workflow_id: str, *, delete_children: bool = False
    ) -> None:
        """Async :meth:`delete_workflow`."""
        cls.delete_workflows([workflow_id], delete_children=delete_children)

    @classmethod
    def delete_workflows(cls, workflow_ids: list[str], *, delete_children: bool = False) -> None:
        """Delete workflows (with ``delete_children``, their descendants too)."""
        rt = _rt()

        def delete(rt: Runtime, ids: list[str]) -> None:
            _introspection.delete_workflows(rt, ids, delete_children=delete_children)

        _durable.call(rt, "DBOS.deleteWorkflows", delete, rt, list(workflow_ids))

    @classmethod
    async def delete_workflows_async(
        cls, workflow_ids: list[str], *, delete_children: bool = False
    ) -> None:
        """Async :meth:`delete_workflows`."""
        cls.delete_workflows(workflow_ids, delete_children=delete_children)

    @classmethod
    def fork_workflow(
        cls,
        workflow_id: str,
        start_step: int,
        *,
        application_version: str | None = None,
        queue_name: str | None = None,
        queue_partition_key: str | None = None,
        timeout_seconds: float | None = None,
    ) -> WorkflowHandle[Any]:
        """Start a copy of a workflow under a new ID (``SetWorkflowID`` names it) that
        replays the steps before ``start_step`` and runs the rest again."""
        rt = _rt()
        new_id = _durable.call(
            rt,
            "DBOS.forkWorkflow",
            _fork,
            rt,
            workflow_id,
            start_step,
            application_version,
            queue_name,
            queue_partition_key,
            timeout_seconds,
        )
        return _workflows.handle(rt, new_id)

    @classmethod
    async def fork_workflow_async(
        cls,
        workflow_id: str,
        start_step: int,
        *,
        application_version: str | None = None,
        queue_name: str | None = None,
        queue_partition_key: str | None = None,
        timeout_seconds: float | None = None,
    ) -> WorkflowHandleAsync[Any]:
        """Async :meth:`fork_workflow`."""
        handle = cls.fork_workflow(
            workflow_id,
            start_step,
            application_version=application_version,
            queue_name=queue_name,
            queue_partition_key=queue_partition_key,
            timeout_seconds=timeout_seconds,
        )
        rt = _rt()
        return WorkflowHandleAsync(rt, handle.workflow_id, rt.active.get(handle.workflow_id))

    @classmethod
    def update_workflow_attributes(
        cls, workflow_id: str, attributes: dict[str, Any] | None
    ) -> None:
        """Replace a workflow's custom attributes (None clears them), as DBOS."""
        validate_attributes(attributes)
        rt = _rt()

        def update(rt: Runtime, wf_id: str) -> None:
            replace_attributes(rt.sysdb, wf_id, attributes)

        _durable.call(rt, "DBOS.updateWorkflowAttributes", update, rt, workflow_id)

    @classmethod
    async def update_workflow_attributes_async(
        cls, workflow_id: str, attributes: dict[str, Any] | None
    ) -> None:
        """Async :meth:`update_workflow_attributes`."""
        cls.update_workflow_attributes(workflow_id, attributes)
