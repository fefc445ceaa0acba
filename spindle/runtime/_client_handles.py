"""The handles a ``DBOSClient`` returns, and the poll its waits use: the client has no
thread, so every wait polls from the caller's thread (the async twins, off the loop)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Generic, Protocol, TypeVar

from ._errors import DBOSException, DBOSNonExistentWorkflowError
from ._handles import settled
from ._status import WorkflowStatus
from ._sysdb import SystemDatabase

R = TypeVar("R")


class ClientLike(Protocol):
    """What a handle needs of its ``DBOSClient`` (a protocol: this module imports no
    client, so the client's modules can all make handles without an import cycle)."""

    _sysdb: SystemDatabase
    _stop: threading.Event

    def _status(self, workflow_id: str) -> WorkflowStatus | None: ...


#: The executor ID recorded on what the client writes (DBOS's client records none).
CLIENT_EXECUTOR_ID = "dbos-client"
# Polls back off from 10 ms to 1 s (by default), as the runtime's handles do.
_POLL_MIN = 0.01


def _poll(
    done: Any, timeout: float | None, stop: threading.Event, *, max_delay: float = 1.0
) -> Any:
    """Call ``done()`` (returning ``(True, value)`` when finished) with back-off until it
    finishes or ``timeout`` seconds pass (then ``(False, None)``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = _POLL_MIN
    while True:
        finished, value = done()
        if finished:
            return True, value
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False, None
        if stop.wait(delay if left is None else min(delay, left)):
            raise DBOSException("the DBOSClient was destroyed while waiting")
        delay = min(delay * 2, max_delay)


class WorkflowHandleClient(Generic[R]):
    """A workflow seen from a client: its ID, its status, and its result (by polling)."""

    def __init__(self, client: ClientLike, workflow_id: str) -> None:
        self._client = client
        self.workflow_id = workflow_id

    def get_workflow_id(self) -> str:
        return self.workflow_id

    def get_result(self, *, polling_interval_sec: float = 1.0) -> R:
        """Wait until the workflow ends; its result, or its error raised."""
        del polling_interval_sec  # the poll backs off to 1 s by itself
        sysdb = self._client._sysdb
        _, value = _poll(lambda: settled(sysdb, self.workflow_id), None, self._client._stop)
        result: R = value
        return result

    def get_status(self) -> WorkflowStatus:
        status = self._client._status(self.workflow_id)
        if status is None:
            raise DBOSNonExistentWorkflowError(self.workflow_id)
        return status


class WorkflowHandleClientAsync(Generic[R]):
    """Async twin of :class:`WorkflowHandleClient` (each poll runs off the loop)."""

    def __init__(self, client: ClientLike, workflow_id: str) -> None:
        self._sync = WorkflowHandleClient[R](client, workflow_id)
        self.workflow_id = workflow_id

    def get_workflow_id(self) -> str:
        return self.workflow_id

    async def get_result(self, *, polling_interval_sec: float = 1.0) -> R:
        return await asyncio.to_thread(self._sync.get_result)

    async def get_status(self) -> WorkflowStatus:
        return await asyncio.to_thread(self._sync.get_status)
