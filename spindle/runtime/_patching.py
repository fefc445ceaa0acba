"""DBOS's patching: ``DBOS.patch`` / ``deprecate_patch`` (and ``_async``), with the
``enable_patching`` config key, to change a workflow's code while workflows started under
the old code still recover.

``patch(name)`` at a point of a workflow answers: does this execution take the new code?
A new execution (no checkpoint at that position yet) records a marker step
``DBOS.patch-<name>`` there and takes it (True); a replay whose history has that marker
takes it again; a replay whose history has another step there (it ran the old code) does
not (False) and consumes no position, so its recorded steps stay aligned.
``deprecate_patch(name)`` is the next release's: it records no marker but still steps over
one in old histories, so the ``if`` can go once no workflow recorded before the patch is
left.
"""

from __future__ import annotations

from ._context import WorkflowContext, current_workflow
from ._durable import check_boundary, record
from ._errors import DBOSException
from ._runtime import Runtime

PREFIX = "DBOS.patch-"


def _workflow(rt: Runtime, what: str) -> WorkflowContext:
    if not rt.config.dbos_settings.get("enable_patching", False):
        raise DBOSException("enable_patching must be True in DBOS configuration")
    ctx = current_workflow.get()
    if ctx is None or ctx.in_step:
        raise DBOSException(f"DBOS.{what} must be called from a workflow")
    return ctx


def _recorded_at_next(ctx: WorkflowContext) -> str | None:
    """The name of the step recorded at the next position (a new workflow has none: it is
    never read back from the database)."""
    if ctx.recorded is None:
        return None
    row = ctx.recorded.get(ctx.next_function_id + 1)
    return row.function_name if row is not None else None


def patch(rt: Runtime, name: str, what: str = "patch") -> bool:
    """True when this execution runs the patched code (see the module's text)."""
    ctx = _workflow(rt, what)
    marker = PREFIX + name
    found = _recorded_at_next(ctx)
    if found is not None:
        if found != marker:
            return False  # history from before the patch: the old code, no position taken
        ctx.next_id()
        return True
    fid = ctx.next_id()
    check_boundary(rt, ctx.entry)
    other = record(rt, ctx, fid, marker, output=None, error=None)
    # Another execution recorded this position first: follow what it did.
    return other is None or other.function_name == marker


def deprecate_patch(rt: Runtime, name: str, what: str = "deprecate_patch") -> bool:
    """Always True: steps over the patch's marker where an old history has one."""
    ctx = _workflow(rt, what)
    if _recorded_at_next(ctx) == PREFIX + name:
        ctx.next_id()
    return True
