"""The one error a command raises for anything the user can fix."""

from __future__ import annotations


class CliError(Exception):
    """A failure shown as one line (``spindle: <message>``) with exit status ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
