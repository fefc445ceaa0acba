"""``spindle workflow list|get|steps|cancel|resume|fork`` and ``spindle queue list``.

DBOS's workflow management commands, against the system database (``-s/--sys-db-url``), with
no app running: they read and change rows, and print JSON as ``dbos workflow ...`` does.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from spindle.runtime import _admin_db
from spindle.runtime._introspection import Filters, query_workflows
from spindle.runtime._metrics import STATUSES
from spindle.runtime._queue_db import requeue_resumed
from spindle.runtime._rows import SUCCESS
from spindle.runtime._status import WorkflowStatus
from spindle.runtime._sysdb import SystemDatabase

from ._errors import CliError
from ._sysdb import add_database_argument, open_database


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``workflow`` (six subcommands) and ``queue list``."""
    workflow = subparsers.add_parser(
        "workflow",
        help="list, inspect, cancel, resume and fork workflows (system database)",
        description="DBOS's workflow management commands, against the system database.",
    )
    sub = workflow.add_subparsers(title="workflow commands", metavar="COMMAND", required=True)

    ls = sub.add_parser("list", help="list workflows as JSON, oldest first")
    _filters(ls, default_limit=10)
    ls.add_argument("-d", "--sort-desc", action="store_true", help="newest first")
    ls.add_argument("-o", "--offset", type=_non_negative, default=None, help="skip this many")
    ls.set_defaults(func=run_list)

    for name, func, text in (
        ("get", run_get, "one workflow's status as JSON"),
        ("steps", run_steps, "a workflow's recorded steps as JSON"),
        ("cancel", run_cancel, "cancel a workflow (and its unfinished children)"),
        ("resume", run_resume, "resume a cancelled or failed workflow from its last step"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("workflow_id", help="the workflow's ID")
        add_database_argument(cmd)
        cmd.set_defaults(func=func)

    fork = sub.add_parser("fork", help="copy a workflow under a new ID, from a given step")
    fork.add_argument("workflow_id", help="the workflow to fork")
    fork.add_argument(
        "--step", type=_positive, default=1, help="the first step to run again (default 1)"
    )
    fork.add_argument("--forked-workflow-id", default=None, help="the new ID (default: a UUID)")
    fork.add_argument("--application-version", default=None, help="the copy's app version")
    fork.add_argument(
        "--executor-id",
        default=None,
        help="the executor that runs the copy when it recovers (default: the source's)",
    )
    add_database_argument(fork)
    fork.set_defaults(func=run_fork)

    queue = subparsers.add_parser("queue", help="list queued workflows (system database)")
    qsub = queue.add_subparsers(title="queue commands", metavar="COMMAND", required=True)
    qls = qsub.add_parser("list", help="workflows still in a queue (ENQUEUED or PENDING)")
    _filters(qls, default_limit=None)
    qls.add_argument("-q", "--queue-name", default=None, help="only this queue")
    qls.set_defaults(func=run_queue_list)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _timestamp(text: str) -> int:
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {text!r}") from None


def _filters(parser: argparse.ArgumentParser, *, default_limit: int | None) -> None:
    add_database_argument(parser)
    parser.add_argument(
        "-l",
        "--limit",
        type=_non_negative,
        default=default_limit,
        help=f"at most this many (default {default_limit or 'all'})",
    )
    parser.add_argument("-S", "--status", choices=STATUSES, default=None, help="only this status")
    parser.add_argument("-n", "--name", default=None, help="only workflows of this function")
    parser.add_argument(
        "-t", "--start-time", type=_timestamp, default=None, help="created at or after (ISO 8601)"
    )
    parser.add_argument(
        "-e", "--end-time", type=_timestamp, default=None, help="created at or before (ISO 8601)"
    )


def status_json(s: WorkflowStatus) -> dict[str, Any]:
    """A workflow status as JSON, with DBOS's field names; values not JSON are shown by repr."""
    return {
        "workflow_id": s.workflow_id,
        "status": s.status,
        "name": s.name,
        "input": _plain(s.input),
        "output": _plain(s.output),
        "error": repr(s.error) if s.error is not None else None,
        "executor_id": s.executor_id,
        "app_version": s.app_version,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "recovery_attempts": s.recovery_attempts,
        "parent_workflow_id": s.parent_workflow_id,
        "workflow_timeout_ms": s.workflow_timeout_ms,
        "workflow_deadline_epoch_ms": s.workflow_deadline_epoch_ms,
        "queue_name": s.queue_name,
        "queue_partition_key": s.queue_partition_key,
    }


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _print(data: Any) -> None:
    print(json.dumps(data, indent=1))


def _list(args: argparse.Namespace, *, queues_only: bool) -> int:
    queue = getattr(args, "queue_name", None)
    # The listing the admin API and the conductor run, on a database no app has open.
    filters = Filters(
        status=[args.status] if args.status is not None else None,
        name=[args.name] if args.name is not None else None,
        start_ms=args.start_time,
        end_ms=args.end_time,
        queue_name=[queue] if queue is not None else None,
        queues_only=queues_only,
        limit=args.limit,
        offset=getattr(args, "offset", None),
        sort_desc=getattr(args, "sort_desc", False),
    )
    with open_database(args) as sysdb:
        _print([status_json(s) for s in query_workflows(sysdb, filters)])
    return 0


def run_list(args: argparse.Namespace) -> int:
    """``workflow list``."""
    return _list(args, queues_only=False)


def run_queue_list(args: argparse.Namespace) -> int:
    """``queue list``."""
    return _list(args, queues_only=True)


def _status(sysdb: SystemDatabase, workflow_id: str) -> WorkflowStatus:
    row = sysdb.get_status(workflow_id)
    if row is None:
        raise CliError(f"no workflow with ID {workflow_id!r}")
    return WorkflowStatus.from_row(row, sysdb.codecs)


def run_get(args: argparse.Namespace) -> int:
    """``workflow get``."""
    with open_database(args) as sysdb:
        _print(status_json(_status(sysdb, args.workflow_id)))
    return 0


def run_steps(args: argparse.Namespace) -> int:
    """``workflow steps``."""
    with open_database(args) as sysdb:
        _status(sysdb, args.workflow_id)
        _print(_admin_db.list_steps(sysdb, args.workflow_id))
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    """``workflow cancel``: a running app stops it at its next step boundary."""
    with open_database(args) as sysdb:
        before = _status(sysdb, args.workflow_id)
        cancelled = sysdb.cancel_tree(args.workflow_id)
        if args.workflow_id not in cancelled:
            raise CliError(
                f"workflow {args.workflow_id} is {before.status}: only PENDING or ENQUEUED "
                "workflows can be cancelled"
            )
        children = len(cancelled) - 1
        print(
            f"cancelled {args.workflow_id}"
            + (f" and {children} unfinished child workflow(s)" if children else "")
        )
    return 0


def run_resume(args: argparse.Namespace) -> int:
    """``workflow resume``: back in its queue, or PENDING on its executor."""
    with open_database(args) as sysdb:
        before = _status(sysdb, args.workflow_id)
        if before.status == SUCCESS:
            raise CliError(f"workflow {args.workflow_id} already succeeded: nothing to resume")
        queue = requeue_resumed(sysdb, args.workflow_id)
        if queue is not None:
            print(f"resumed {args.workflow_id}: ENQUEUED in queue {queue!r}")
            return 0
        sysdb.resume(args.workflow_id, before.executor_id)
        print(
            f"resumed {args.workflow_id}: PENDING on executor {before.executor_id!r}; it runs "
            "from its last completed step when that executor recovers (its next launch, or "
            "POST /dbos-workflow-recovery on its admin server)"
        )
    return 0


def run_fork(args: argparse.Namespace) -> int:
    """``workflow fork``: a PENDING copy that keeps the steps before ``--step``."""
    with open_database(args) as sysdb:
        source = _status(sysdb, args.workflow_id)
        executor = args.executor_id or source.executor_id
        new_id = _admin_db.fork_workflow(
            sysdb,
            args.workflow_id,
            args.step,
            executor_id=executor,
            new_workflow_id=args.forked_workflow_id,
            application_version=args.application_version,
        )
        if new_id is None:
            raise CliError(f"no workflow with ID {args.workflow_id!r}")
        _print(status_json(_status(sysdb, new_id)))
    return 0
