"""Thread diagnostics: the registry, lifecycle events, stacks and the shutdown timeline.

This package knows nothing of workflows: ``spindle.runtime`` records into it.
"""

from ._events import LifecycleEvent as LifecycleEvent
from ._kinds import EventType as EventType
from ._kinds import JoinOutcome as JoinOutcome
from ._kinds import ThreadGroup as ThreadGroup
from ._kinds import ThreadKind as ThreadKind
from ._kinds import ThreadState as ThreadState
from ._registry import RUNTIME_NAME_PREFIXES as RUNTIME_NAME_PREFIXES
from ._registry import RegistrySnapshot as RegistrySnapshot
from ._registry import StopEvent as StopEvent
from ._registry import StopEventInfo as StopEventInfo
from ._registry import ThreadInfo as ThreadInfo
from ._registry import ThreadRecord as ThreadRecord
from ._registry import ThreadRegistry as ThreadRegistry
from ._rules import RULES as RULES
from ._rules import check_rules as check_rules
from ._session import DiagnosticsSession as DiagnosticsSession
from ._stacks import capture_stack as capture_stack
from ._stacks import format_stack as format_stack
from ._timeline import SHUTDOWN_PHASES as SHUTDOWN_PHASES
from ._timeline import PhaseRecord as PhaseRecord
from ._timeline import ShutdownRecorder as ShutdownRecorder
from ._timeline import ShutdownTimeline as ShutdownTimeline
from ._timeline import Violation as Violation

__all__ = [
    "RULES",
    "RUNTIME_NAME_PREFIXES",
    "SHUTDOWN_PHASES",
    "DiagnosticsSession",
    "EventType",
    "JoinOutcome",
    "LifecycleEvent",
    "PhaseRecord",
    "RegistrySnapshot",
    "ShutdownRecorder",
    "ShutdownTimeline",
    "StopEvent",
    "StopEventInfo",
    "ThreadGroup",
    "ThreadInfo",
    "ThreadKind",
    "ThreadRecord",
    "ThreadRegistry",
    "ThreadState",
    "Violation",
    "capture_stack",
    "check_rules",
    "format_stack",
]
