"""``DBOS.enqueue_workflow_with_options``: enqueue a workflow by name and options, without
its function (DBOS's ``EnqueueOptions``), so another process's code may run it.

As in DBOS the options are not checked against this process's registry, and
``app_version`` is left unset unless given: a version-less row is anyone's to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from ._attributes import store as store_attributes
from ._attributes import validate as validate_attributes
from ._core import record_child_start, resolve_identity
from ._duplication import DuplicationPolicy, check_policy, enqueue_or_holder
from ._errors import DBOSConflictingWorkflowError, DBOSException
from ._queue import MAX_PRIORITY
from ._queue_db import insert_enqueued
from ._serializer import WorkflowSerializationFormat

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._sysdb import SystemDatabase


class _Required(TypedDict):
    workflow_name: str
    queue_name: str


class EnqueueOptions(_Required, total=False):
    """What ``enqueue_workflow_with_options`` takes (the DBOS 2.30 keys Spindle honours)."""

    workflow_id: str
    app_version: str
    workflow_timeout: float
    delay_seconds: float
    deduplication_id: str
    priority: int
    queue_partition_key: str
    attributes: dict[str, Any]
    duplication_policy: DuplicationPolicy
    #: The format of the workflow's inputs, output and error (PORTABLE: portable JSON).
    serialization_type: WorkflowSerializationFormat


_KNOWN = frozenset(EnqueueOptions.__annotations__) | frozenset(_Required.__annotations__)


def enqueue_with_options(
    rt: Runtime, options: EnqueueOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, bool]:
    """Insert the ENQUEUED (or DELAYED) row; returns the workflow ID (idempotent by ID),
    and whether this call wrote its row."""
    rt.require_launched()
    ident = resolve_identity(rt, options.get("workflow_id"))
    workflow_id, created = enqueue_by_name(
        rt.sysdb,
        options,
        args,
        kwargs,
        workflow_id=ident.workflow_id,
        executor_id=rt.config.executor_id,
        now=rt.clock.now(),
        parent_workflow_id=ident.parent_workflow_id,
        inherited_timeout_ms=ident.timeout_ms,
        inherited_deadline_ms=None if ident.own_timeout else ident.deadline_epoch_ms,
    )
    if workflow_id == ident.workflow_id:  # not another workflow's deduplication hold
        record_child_start(rt, ident, options["workflow_name"])
    if created:
        rt.queues.wake(options["queue_name"])
    return workflow_id, created


def enqueue_by_name(
    sysdb: SystemDatabase,
    options: EnqueueOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    workflow_id: str,
    executor_id: str,
    now: float,
    parent_workflow_id: str | None = None,
    inherited_timeout_ms: int | None = None,
    inherited_deadline_ms: int | None = None,
) -> tuple[str, bool]:
    """The one enqueue by name and options, for ``DBOS.enqueue_workflow_with_options`` and
    ``DBOSClient.enqueue``: validate, insert, store the attributes of a new row. Returns the
    workflow ID (the holder's under ``duplication_policy="return-existing"``) and whether
    this call created it. ``inherited_*``: a parent workflow's timeout and deadline, which
    an own ``workflow_timeout`` replaces."""
    name, queue_name, priority, timeout, delay = check_options(options)
    timeout_ms = int(timeout * 1000) if timeout is not None else inherited_timeout_ms
    codec = sysdb.codecs.for_type(options.get("serialization_type"))
    existing, holder = enqueue_or_holder(
        sysdb,
        options.get("duplication_policy"),
        queue_name,
        options.get("deduplication_id"),
        lambda: insert_enqueued(
            sysdb,
            workflow_id=workflow_id,
            name=name,
            inputs=codec.encode_inputs(args, kwargs, f"the inputs of workflow {name!r}"),
            queue_name=queue_name,
            executor_id=executor_id,
            application_version=options.get("app_version"),
            parent_workflow_id=parent_workflow_id,
            timeout_ms=timeout_ms,
            # An own timeout runs from the dequeue; an inherited deadline stays the parent's.
            deadline_epoch_ms=None if timeout is not None else inherited_deadline_ms,
            deduplication_id=options.get("deduplication_id"),
            priority=priority or 0,
            queue_partition_key=options.get("queue_partition_key"),
            delay_until_epoch_ms=int((now + delay) * 1000) if delay is not None else None,
            serialization=codec.format,
        ),
    )
    if holder is not None:
        return holder, False  # "return-existing": the workflow holding the deduplication ID
    if existing is not None and existing.name != name:
        raise DBOSConflictingWorkflowError(
            workflow_id,
            f"Workflow already exists with a different function name: {existing.name}, "
            f"but the provided function name is: {name}",
        )
    attributes = options.get("attributes")
    if existing is None and attributes is not None:
        store_attributes(sysdb, workflow_id, attributes)
    return workflow_id, existing is None


def check_options(
    options: EnqueueOptions,
) -> tuple[str, str, int | None, float | None, float | None]:
    """Validate DBOS's ``EnqueueOptions``; returns the workflow and queue names, priority,
    timeout and delay (shared by ``enqueue_workflow_with_options`` and ``DBOSClient``)."""
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise DBOSException(
            f"EnqueueOptions key {unknown[0]!r} is not supported by Spindle "
            f"(supported: {sorted(_KNOWN)})"
        )
    name, queue_name = options.get("workflow_name"), options.get("queue_name")
    if not isinstance(name, str) or not name or not isinstance(queue_name, str) or not queue_name:
        raise DBOSException("EnqueueOptions needs workflow_name and queue_name")
    priority = options.get("priority")
    if priority is not None and not 1 <= priority <= MAX_PRIORITY:
        raise DBOSException(
            f"Invalid priority {priority}. Priority must be between 1~{MAX_PRIORITY}."
        )
    timeout = options.get("workflow_timeout")
    if timeout is not None and not timeout > 0:
        raise DBOSException(f"Invalid workflow timeout {timeout}. Timeouts must be positive.")
    validate_attributes(options.get("attributes"))
    delay = options.get("delay_seconds")
    if delay is not None and delay < 0:
        raise DBOSException("delay_seconds must be >= 0")
    check_policy(options.get("duplication_policy"), queue_name, options.get("deduplication_id"))
    return name, queue_name, priority, timeout, delay
