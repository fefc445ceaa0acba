"""Thread diagnostics: the registry, lifecycle events, stacks and the shutdown timeline.

This package knows nothing of workflows: ``spindle.runtime`` records into it.
"""

from ._clock import Clock as Clock
from ._clock import RealClock as RealClock
from ._dump import ThreadStack as ThreadStack
from ._dump import dump_stacks as dump_stacks
from ._errors import DiagnosticsError as DiagnosticsError
from ._errors import PySpyError as PySpyError
from ._errors import SpanExportConfigError as SpanExportConfigError
from ._events import LifecycleEvent as LifecycleEvent
from ._info import RegistrySnapshot as RegistrySnapshot
from ._info import StopEventInfo as StopEventInfo
from ._info import ThreadInfo as ThreadInfo
from ._kinds import EventType as EventType
from ._kinds import JoinOutcome as JoinOutcome
from ._kinds import ThreadGroup as ThreadGroup
from ._kinds import ThreadKind as ThreadKind
from ._kinds import ThreadState as ThreadState
from ._lint import LINT_RULES as LINT_RULES
from ._lint import Lint as Lint
from ._lint import lint as lint
from ._phases import SHUTDOWN_PHASES as SHUTDOWN_PHASES
from ._pyspy import PySpyThread as PySpyThread
from ._pyspy import parse_pyspy_json as parse_pyspy_json
from ._pyspy import pyspy_dump as pyspy_dump
from ._recorder import ShutdownRecorder as ShutdownRecorder
from ._registry import RUNTIME_NAME_PREFIXES as RUNTIME_NAME_PREFIXES
from ._registry import StopEvent as StopEvent
from ._registry import ThreadRecord as ThreadRecord
from ._registry import ThreadRegistry as ThreadRegistry
from ._rules import RULES as RULES
from ._rules import check_rules as check_rules
from ._session import DiagnosticsSession as DiagnosticsSession
from ._session import add_timeline_listener as add_timeline_listener
from ._spans import SpanEmitter as SpanEmitter
from ._spans import set_default_tracer_provider_for_tests as set_default_tracer_provider_for_tests
from ._stacks import capture_stack as capture_stack
from ._stacks import format_stack as format_stack
from ._timeline import PhaseRecord as PhaseRecord
from ._timeline import ShutdownTimeline as ShutdownTimeline
from ._timeline import Violation as Violation
from ._timeline import load_report as load_report
from ._waiting import WAITING_ON_VALUES as WAITING_ON_VALUES
from ._waiting import waiting_on as waiting_on

__all__ = [
    "LINT_RULES",
    "RULES",
    "RUNTIME_NAME_PREFIXES",
    "SHUTDOWN_PHASES",
    "WAITING_ON_VALUES",
    "Clock",
    "DiagnosticsError",
    "DiagnosticsSession",
    "EventType",
    "JoinOutcome",
    "LifecycleEvent",
    "Lint",
    "PhaseRecord",
    "PySpyError",
    "PySpyThread",
    "RealClock",
    "RegistrySnapshot",
    "ShutdownRecorder",
    "ShutdownTimeline",
    "SpanEmitter",
    "SpanExportConfigError",
    "StopEvent",
    "StopEventInfo",
    "ThreadGroup",
    "ThreadInfo",
    "ThreadKind",
    "ThreadRecord",
    "ThreadRegistry",
    "ThreadStack",
    "ThreadState",
    "Violation",
    "add_timeline_listener",
    "capture_stack",
    "check_rules",
    "dump_stacks",
    "format_stack",
    "lint",
    "load_report",
    "parse_pyspy_json",
    "pyspy_dump",
    "set_default_tracer_provider_for_tests",
    "waiting_on",
]
