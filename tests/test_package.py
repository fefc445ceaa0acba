"""The package's shape: its public names, and the one door for threads."""

from __future__ import annotations

import re
from pathlib import Path

import spindle
import spindle.diagnostics
import spindle.runtime

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_are_pinned() -> None:
    """The top-level API is exactly this set (a change here is an API change)."""
    assert sorted(spindle.__all__) == [
        "AsyncSQLAlchemyDatasource",
        "ClientScheduleInput",
        "DBOS",
        "DBOSAwaitedWorkflowCancelledError",
        "DBOSClient",
        "DBOSConfig",
        "DBOSConfigError",
        "DBOSConfiguredInstance",
        "DBOSContextEnsure",
        "DBOSContextSetAuth",
        "DBOSDestroyInWorkflowError",
        "DBOSException",
        "DBOSMaxRecoveryAttemptsExceededError",
        "DBOSMaxStepRetriesExceeded",
        "DBOSNonExistentWorkflowError",
        "DBOSNotLaunchedError",
        "DBOSPortableJSONSerializer",
        "DBOSQueueDeduplicatedError",
        "DBOSRuntimeShutdownError",
        "DBOSSerializationError",
        "DBOSSystemDatabaseUnavailableError",
        "DBOSWorkflowCancelledError",
        "DBOSWorkflowConflictIDError",
        "Debouncer",
        "DebouncerClient",
        "DefaultSerializer",
        "DuplicationPolicy",
        "EnqueueOptions",
        "Event",
        "EventSource",
        "KafkaMessage",
        "PortableWorkflowError",
        "PropagateOtelContext",
        "Queue",
        "SQLAlchemyDatasource",
        "ScheduleInput",
        "SendMessage",
        "Serializer",
        "SetEnqueueOptions",
        "SetWorkflowAttributes",
        "SetWorkflowID",
        "SetWorkflowTimeout",
        "StepInfo",
        "StepOptions",
        "VersionInfo",
        "WorkflowHandle",
        "WorkflowHandleAsync",
        "WorkflowSchedule",
        "WorkflowSerializationFormat",
        "WorkflowStatus",
        "WorkflowStatusString",
        "error",
        "make_pydantic_args_validator",
        "pydantic_args_validator",
        "run_dbos_database_migrations",
    ]
    for name in spindle.__all__:
        assert getattr(spindle, name) is getattr(spindle.runtime, name)


def test_threads_are_only_made_by_the_supervisor() -> None:
    """No ``threading.Thread(`` call in spindle/runtime outside the supervisor module."""
    offenders = []
    for path in (ROOT / "spindle" / "runtime").rglob("*.py"):
        if path.name == "_supervisor.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bThread\(", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_diagnostics_imports_nothing_from_the_runtime() -> None:
    """The dependency points one way: runtime -> diagnostics."""
    for path in (ROOT / "spindle" / "diagnostics").rglob("*.py"):
        imports = re.findall(
            r"^\s*(?:from|import)\s+(spindle\.runtime|\.\.runtime)\b",
            path.read_text(),
            re.MULTILINE,
        )
        assert imports == [], path
