"""The diagnostics package's exceptions: one base class."""

from __future__ import annotations


class DiagnosticsError(Exception):
    """Base class of every error raised by ``spindle.diagnostics``."""


class PySpyError(DiagnosticsError):
    """py-spy could not dump the process; the message says why (missing, timeout, ptrace)."""


class SpanExportConfigError(DiagnosticsError, ValueError):
    """The span export configuration cannot be honoured (names the setting at fault)."""
