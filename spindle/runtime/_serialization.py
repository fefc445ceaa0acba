"""Pickle-based serialization of inputs, outputs and errors, with clear failures."""

from __future__ import annotations

import pickle
from typing import Any

from ._errors import DBOSException, DBOSSerializationError


def serialize(value: Any, what: str) -> bytes:
    """Pickle ``value``; a failure raises :class:`DBOSSerializationError` naming ``what``."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise DBOSSerializationError(
            f"cannot serialize {what}: {type(exc).__name__}: {exc}"
        ) from exc


def deserialize(data: bytes | None) -> Any:
    """Inverse of :func:`serialize` (None stays None)."""
    if data is None:
        return None
    return pickle.loads(data)


def serialize_exception(exc: BaseException) -> bytes:
    """Pickle an exception so it can be re-raised on replay; unpicklable ones are wrapped."""
    try:
        data = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
        return data
    except Exception:
        return pickle.dumps(DBOSException(f"{type(exc).__name__}: {exc}"))


def deserialize_exception(data: bytes) -> BaseException:
    """Inverse of :func:`serialize_exception`."""
    value = pickle.loads(data)
    if isinstance(value, BaseException):
        return value
    return DBOSException(repr(value))
