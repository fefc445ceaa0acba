"""The thread dashboard: a Starlette app over a diagnostics source, mountable at ``/dbos``."""

from ._app import create_app as create_app
from ._fleet import Fleet as Fleet
from ._fleet_app import create_conductor_app as create_conductor_app
from ._history import ThreadHistory as ThreadHistory
from ._source import DashboardSource as DashboardSource
from ._source import ReportSource as ReportSource
from ._source import SessionSource as SessionSource

__all__ = [
    "DashboardSource",
    "Fleet",
    "ReportSource",
    "SessionSource",
    "ThreadHistory",
    "create_app",
    "create_conductor_app",
]
