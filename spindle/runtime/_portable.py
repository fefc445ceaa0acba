"""DBOS's portable JSON format (``portable_json``): values every DBOS SDK, and plain SQL, read.

A value is compact JSON. Python types JSON lacks are written as DBOS writes them (a datetime
as an RFC 3339 UTC string with milliseconds, a date as ``YYYY-MM-DD``, a Decimal as its
string, a tuple or set as an array) and read back as those JSON values: the reader, in
whatever language, knows what it expects. A workflow's inputs are
``{"positionalArgs": [...], "namedArgs": {...}}`` and its error is DBOS's error data
``{"name", "message", "code", "data"}``, read back as :class:`PortableWorkflowError`.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, get_type_hints

from ._serializer import PORTABLE_FORMAT, Serializer

__all__ = [
    "DBOSPortableJSONSerializer",
    "PortableWorkflowError",
    "coerce_to_hints",
    "error_data",
    "error_from_data",
    "inputs_from_portable",
    "inputs_to_portable",
]


class PortableWorkflowError(Exception):
    """A workflow error in portable form: what any DBOS SDK records and reads back.

    ``name`` is the error's type name in the language that raised it, ``code`` an optional
    number or string and ``data`` any JSON value; raise one from a portable workflow to
    choose all four.
    """

    code: int | str | None = None
    data: Any = None

    def __init__(
        self, message: str, name: str, code: int | str | None = None, data: Any = None
    ) -> None:
        super().__init__(message, name)
        self.message = message
        self.name = name
        self.code = code
        self.data = data

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"PortableWorkflowError(message={self.message!r}, name={self.name!r}, "
            f"code={self.code!r}, data={self.data!r})"
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.name, self.code, self.data))

    def to_error_data(self) -> dict[str, Any]:
        """The portable error data: name and message, code and data when set."""
        out: dict[str, Any] = {"name": self.name, "message": self.message}
        if self.code is not None:
            out["code"] = self.code
        if self.data is not None:
            out["data"] = self.data
        return out


def _utc_text(value: datetime.datetime) -> str:
    # A naive datetime is taken as UTC (the portable form has no "local"); milliseconds,
    # as JavaScript's Date.toISOString() writes them, so every SDK parses it.
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _to_json(value: Any) -> Any:
    """``value`` made of JSON types only (TypeError naming anything that has no portable form)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    "Attempt to do portable JSON serialization of a map with non-string keys"
                )
            out[key] = _to_json(item)
        return out
    if isinstance(value, list | tuple | set):
        return [_to_json(item) for item in value]
    # datetime before date: a datetime is a date.
    if isinstance(value, datetime.datetime):
        return _utc_text(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not portable JSON serializable")


def dumps(value: Any) -> str:
    """``value`` as compact portable JSON."""
    return json.dumps(_to_json(value), separators=(",", ":"), ensure_ascii=False)


class DBOSPortableJSONSerializer(Serializer):
    """DBOS's ``portable_json``: compact JSON that every DBOS SDK reads and writes."""

    def serialize(self, data: Any) -> str:
        """``data`` as compact JSON; datetime, date, Decimal, tuple and set converted."""
        return dumps(data)

    def deserialize(self, serialized_data: str | None) -> Any:
        """The JSON value of ``serialized_data`` (None stays None)."""
        if serialized_data is None:
            return None
        return json.loads(serialized_data)

    def name(self) -> str:
        """``portable_json``."""
        return PORTABLE_FORMAT


def inputs_to_portable(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A workflow's arguments in DBOS's portable shape."""
    return {"positionalArgs": list(args), "namedArgs": dict(kwargs)}


def inputs_from_portable(value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments from DBOS's portable shape (either key may be absent: none of that kind)."""
    if not isinstance(value, Mapping):
        raise TypeError(
            "portable workflow inputs must be a JSON object with positionalArgs and namedArgs, "
            f"not {type(value).__name__}"
        )
    positional = value.get("positionalArgs") or []
    named = value.get("namedArgs") or {}
    if not isinstance(positional, list) or not isinstance(named, Mapping):
        raise TypeError("positionalArgs must be a JSON array and namedArgs a JSON object")
    return tuple(positional), dict(named)


def error_data(exc: BaseException) -> dict[str, Any]:
    """DBOS's portable error data for ``exc``: its type name, message, and a code if it has
    one (an ``int`` or ``str`` attribute ``code``)."""
    if isinstance(exc, PortableWorkflowError):
        return {"name": exc.name, "message": exc.message, "code": exc.code, "data": exc.data}
    code = getattr(exc, "code", None)
    return {
        "name": type(exc).__name__,
        "message": str(exc),
        "code": code if isinstance(code, int | str) and not isinstance(code, bool) else None,
    }


def error_from_data(value: Any) -> PortableWorkflowError:
    """The error that portable error data stands for."""
    if not isinstance(value, Mapping):
        return PortableWorkflowError(str(value), "Error")
    code = value.get("code")
    return PortableWorkflowError(
        str(value.get("message", "")),
        str(value.get("name", "Error")),
        code if isinstance(code, int | str) else None,
        value.get("data"),
    )


def _parse_datetime(text: str) -> datetime.datetime:
    # fromisoformat reads "Z" and RFC 3339 offsets from Python 3.11 on.
    return datetime.datetime.fromisoformat(text)


_COERCE: dict[Any, Callable[[str], Any]] = {
    datetime.datetime: _parse_datetime,
    datetime.date: datetime.date.fromisoformat,
    decimal.Decimal: decimal.Decimal,
}


def coerce_to_hints(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Portable inputs turned back into the types ``func``'s parameters are annotated with:
    a string for a ``datetime``, ``date`` or ``Decimal`` parameter becomes one (JSON has
    none of them). Anything else, or a string that does not parse, is passed as it is."""
    try:
        hints = get_type_hints(func)
        params = list(inspect.signature(func).parameters.values())
    except Exception:  # unresolvable annotations: nothing to coerce to
        return args, kwargs

    def coerce(name: str, value: Any) -> Any:
        convert = _COERCE.get(hints.get(name))
        if convert is None or not isinstance(value, str):
            return value
        try:
            return convert(value)
        except (ValueError, decimal.InvalidOperation):
            return value

    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    new_args = tuple(
        coerce(positional[i].name, v) if i < len(positional) else v for i, v in enumerate(args)
    )
    return new_args, {k: coerce(k, v) for k, v in kwargs.items()}
