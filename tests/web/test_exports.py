"""The public face of spindle.web is pinned (as Trio's test_exports does)."""

from __future__ import annotations

import spindle.web
from spindle.diagnostics import DiagnosticsSession, ThreadRegistry
from spindle.web import DashboardSource, ReportSource, SessionSource


def test_exported_names_are_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert sorted(spindle.web.__all__) == [
        "DashboardSource",
        "Fleet",
        "ReportSource",
        "SessionSource",
        "ThreadHistory",
        "create_app",
        "create_conductor_app",
    ]
    for name in spindle.web.__all__:
        assert getattr(spindle.web, name) is not None


def test_session_adapter_and_report_source_satisfy_the_protocol() -> None:
    """SessionSource and ReportSource are DashboardSources."""
    session = DiagnosticsSession(ThreadRegistry(), service_name="shop", enabled=True)
    adapted = SessionSource(session)
    assert isinstance(adapted, DashboardSource)
    assert adapted.service_name == "shop"
    assert adapted.timelines() == []
    assert adapted.registry is session.registry
    report = ReportSource([])
    assert isinstance(report, DashboardSource)
    assert report.service_name == "report"
