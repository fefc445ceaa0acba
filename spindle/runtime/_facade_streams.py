"""``DBOS``'s streams: ``write_stream``, ``close_stream``, ``read_stream`` and their
``_async`` twins (the logic is in :mod:`._streams`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from typing import Any

from . import _current, _streams
from ._serializer import WorkflowSerializationFormat


class StreamAPI:
    """DBOS Transact 2.30's stream names."""

    @classmethod
    def write_stream(
        cls,
        key: str,
        value: Any,
        *,
        serialization_type: WorkflowSerializationFormat = WorkflowSerializationFormat.DEFAULT,
    ) -> None:
        """In a workflow (or a step): append ``value`` to this workflow's stream ``key``;
        a workflow's write is its own step, so a recovery never writes it twice."""
        _streams.write_stream(_current.get(), key, value, serialization_type)

    @classmethod
    async def write_stream_async(
        cls,
        key: str,
        value: Any,
        *,
        serialization_type: WorkflowSerializationFormat = WorkflowSerializationFormat.DEFAULT,
    ) -> None:
        """Async :meth:`write_stream` (the write runs off the loop)."""
        rt = _current.get()
        await asyncio.to_thread(_streams.write_stream, rt, key, value, serialization_type)

    @classmethod
    def close_stream(cls, key: str) -> None:
        """In a workflow: close the stream ``key``; its readers stop after the last value."""
        _streams.close_stream(_current.get(), key)

    @classmethod
    async def close_stream_async(cls, key: str) -> None:
        """Async :meth:`close_stream`."""
        rt = _current.get()
        await asyncio.to_thread(_streams.close_stream, rt, key)

    @classmethod
    def read_stream(
        cls, workflow_id: str, key: str, *, offset: int = 0
    ) -> Generator[Any, Any, None]:
        """The values of a workflow's stream, in order from ``offset``, until the stream is
        closed or the workflow is no longer active."""
        yield from _streams.read_stream(_current.get(), workflow_id, key, offset)

    @classmethod
    async def read_stream_async(
        cls, workflow_id: str, key: str, *, offset: int = 0
    ) -> AsyncGenerator[Any, None]:
        """Async :meth:`read_stream` (waits hold no thread)."""
        async for value in _streams.read_stream_async(_current.get(), workflow_id, key, offset):
            yield value
