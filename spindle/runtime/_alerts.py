"""DBOS's ``@DBOS.alert_handler``: the function a Conductor ``alert`` message calls.

One handler per process, as DBOS keeps one per app (a second registration replaces the
first). Without one an alert is logged. The handler runs on the conductor's thread, so a
slow one delays that connection's next reply, as in DBOS; its exception becomes the reply's
``success: false`` with the error, never the connection's end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._conductor_protocol import field

if TYPE_CHECKING:
    from ._runtime import Runtime

AlertHandler = Callable[[str, str, dict[str, str]], None]

logger = logging.getLogger("dbos")

_lock = threading.Lock()
_handler: list[AlertHandler] = []  # zero or one: the registered handler


def register(func: AlertHandler) -> AlertHandler:
    """Make ``func(name, message, metadata)`` the process's alert handler."""
    if not callable(func):
        raise TypeError("alert_handler decorates a function (name, message, metadata)")
    with _lock:
        _handler[:] = [func]
    return func


def clear() -> None:
    """Forget the handler (``DBOS.destroy(destroy_registry=True)``)."""
    with _lock:
        _handler.clear()


def handle_alert(_rt: Runtime, msg: dict[str, Any]) -> dict[str, Any]:
    """The conductor's ``alert`` request: call the handler (or log the alert)."""
    name = field(msg, "name", str)
    message = field(msg, "message", str)
    metadata = field(msg, "metadata", dict, {})
    with _lock:
        handler = _handler[0] if _handler else None
    if handler is None:
        logger.info("Alert: %s | Message: %s | Metadata: %s", name, message, metadata)
        return {"success": True}
    try:
        handler(name, message, {str(k): str(v) for k, v in metadata.items()})
    except Exception as exc:
        logger.exception("alert handler failed on alert %r", name)
        return {"success": False, "error_message": f"{type(exc).__name__}: {exc}"}
    return {"success": True}
