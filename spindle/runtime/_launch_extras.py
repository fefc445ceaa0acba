"""What DBOS 2.30 does around launch and destroy beyond Spindle's own lifecycle: register
the application version, start the OTLP log export and the per-operation span tracer, and
at the very end of ``destroy()`` flush and stop the log export."""

from __future__ import annotations

from ._op_spans import OperationTracer
from ._otlp_logs import start as start_log_export
from ._runtime import Runtime
from ._versions import register as register_version


def after_launch(rt: Runtime) -> None:
    """Called once ``_lifecycle.launch`` returned."""
    register_version(rt)  # as DBOS: list_application_versions shows every launch
    cfg = rt.config
    settings = cfg.dbos_settings
    if rt.log_export is None:
        rt.log_export = start_log_export(settings, service_name=cfg.name, log_level=cfg.log_level)
    if rt.diag is not None and rt.diag.exporting:
        rt.op_tracer = OperationTracer(
            rt.diag.tracer,
            application_version=cfg.application_version,
            executor_id=cfg.executor_id,
            attribute_format=settings.get("otel_attribute_format") or "legacy",
            extra_attributes=settings.get("otlp_attributes"),
        )


def after_destroy(rt: Runtime) -> None:
    """Called once ``_lifecycle.destroy`` returned: last, so the shutdown's own log lines
    are exported too."""
    rt.op_tracer = None
    log_export, rt.log_export = rt.log_export, None
    if log_export is not None:
        log_export.shutdown()
