"""How stored values are written and read: a codec per format, chosen by a row's format column.

Every value column (inputs, outputs, errors, messages, events, stream values, schedule
contexts) sits beside a ``serialization`` column naming its format. NULL is Spindle's native
format, raw pickle bytes: what an application without a serializer writes, as cheaply as
before formats existed. Any other name is a :class:`~._serializer.Serializer`'s: the column
holds the UTF-8 bytes of the string that serializer wrote (for ``portable_json``, plain JSON
any SQL client reads). A reader picks the codec by the row's format, never by the
configuration of the day, so rows written before a change of serializer stay readable.

The module-level functions are the native codec's, for the callers that only ever store
Spindle-internal values (sleep deadlines, step bookkeeping) or handle native rows.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import DBOSException, DBOSSerializationError
from ._portable import (
    DBOSPortableJSONSerializer,
    coerce_to_hints,
    error_data,
    error_from_data,
    inputs_from_portable,
    inputs_to_portable,
)
from ._serializer import (
    PICKLE_FORMAT,
    PORTABLE_FORMAT,
    DefaultSerializer,
    Serializer,
    WorkflowSerializationFormat,
)

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


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
    return _as_exception(pickle.loads(data))


def as_bytes(value: bytes | str | memoryview) -> bytes:
    """A value column's content as bytes. SQLite hands back text for a value a plain SQL
    ``INSERT`` wrote as a string literal (its columns take any type): that is how a
    portable row is written without DBOS code, so it is read as its UTF-8 bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _as_exception(value: Any) -> BaseException:
    if isinstance(value, BaseException):
        return value
    return DBOSException(repr(value))


class Codec:
    """Writes and reads values in one format (``format``: the column's value, None = native)."""

    __slots__ = ("format",)

    def __init__(self, format: str | None) -> None:
        self.format = format

    def encode(self, value: Any, what: str) -> bytes:
        """``value`` as stored bytes; DBOSSerializationError naming ``what`` if it cannot be."""
        return serialize(value, what)

    def decode(self, data: bytes | None) -> Any:
        """The value stored bytes stand for (None stays None)."""
        return deserialize(data)

    def encode_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> bytes:
        """A workflow's arguments as stored bytes."""
        return serialize((args, kwargs), what)

    def decode_inputs(self, data: bytes) -> Inputs:
        """A workflow's arguments from stored bytes."""
        args, kwargs = deserialize(data)
        return args, kwargs

    def encode_error(self, exc: BaseException) -> bytes:
        """An error as stored bytes; never fails (an error this format cannot hold is
        recorded as a :class:`DBOSException` with its type and message)."""
        return serialize_exception(exc)

    def decode_error(self, data: bytes) -> BaseException:
        """The error stored bytes stand for."""
        return deserialize_exception(data)

    def coerce_inputs(self, func: Callable[..., Any], inputs: Inputs) -> Inputs:
        """Inputs as ``func`` should receive them (only portable inputs need converting)."""
        return inputs


NATIVE = Codec(None)
"""Spindle's native format: raw pickle bytes, format column NULL."""


class SerializerCodec(Codec):
    """A :class:`Serializer`'s format: the column holds its strings, UTF-8 encoded."""

    __slots__ = ("serializer",)

    def __init__(self, serializer: Serializer) -> None:
        super().__init__(serializer.name())
        self.serializer = serializer

    def _write(self, value: Any, what: str) -> bytes:
        try:
            return self.serializer.serialize(value).encode("utf-8")
        except Exception as exc:
            raise DBOSSerializationError(
                f"cannot serialize {what} as {self.format}: {type(exc).__name__}: {exc}"
            ) from exc

    def _read(self, data: bytes | str) -> Any:
        try:
            text = data if isinstance(data, str) else bytes(data).decode("utf-8")
            return self.serializer.deserialize(text)
        except Exception as exc:
            raise DBOSSerializationError(
                f"cannot read a value stored as {self.format}: {type(exc).__name__}: {exc}"
            ) from exc

    def encode(self, value: Any, what: str) -> bytes:
        """``value`` through the serializer."""
        return self._write(value, what)

    def decode(self, data: bytes | None) -> Any:
        """The serializer's reading of stored bytes (None stays None)."""
        if data is None:
            return None
        return self._read(data)

    def encode_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> bytes:
        """The arguments as DBOS passes them to a serializer: ``{"args", "kwargs"}``."""
        return self._write({"args": args, "kwargs": kwargs}, what)

    def decode_inputs(self, data: bytes) -> Inputs:
        """The arguments from ``{"args", "kwargs"}`` (a JSON serializer gives lists back)."""
        value = self._read(data)
        if not isinstance(value, Mapping) or "args" not in value:
            raise DBOSSerializationError(
                f"workflow inputs stored as {self.format} are not {{'args', 'kwargs'}}"
            )
        return tuple(value["args"]), dict(value.get("kwargs") or {})

    def encode_error(self, exc: BaseException) -> bytes:
        """The exception through the serializer if it round-trips; else its text, wrapped."""
        try:
            data = self.serializer.serialize(exc)
            if isinstance(self.serializer.deserialize(data), BaseException):
                return data.encode("utf-8")
        except Exception:
            pass
        fallback = f"{type(exc).__name__}: {exc}"
        try:
            return self.serializer.serialize(DBOSException(fallback)).encode("utf-8")
        except Exception:
            # decode_error turns a stored non-exception into a DBOSException with its text.
            return self._write(fallback, "an error")

    def decode_error(self, data: bytes) -> BaseException:
        """The error the serializer reads back."""
        return _as_exception(self._read(data))


class PortableCodec(SerializerCodec):
    """``portable_json``: inputs in DBOS's portable shape, errors as portable error data."""

    __slots__ = ()

    def __init__(self, serializer: Serializer | None = None) -> None:
        super().__init__(serializer or DBOSPortableJSONSerializer())

    def encode_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> bytes:
        """``{"positionalArgs": [...], "namedArgs": {...}}``."""
        return self._write(inputs_to_portable(args, kwargs), what)

    def decode_inputs(self, data: bytes) -> Inputs:
        """The arguments from the portable shape."""
        try:
            return inputs_from_portable(self._read(data))
        except TypeError as exc:
            raise DBOSSerializationError(str(exc)) from exc

    def encode_error(self, exc: BaseException) -> bytes:
        """DBOS's portable error data: name, message, code (and data)."""
        try:
            return self._write(error_data(exc), "an error")
        except DBOSSerializationError:  # a PortableWorkflowError with unportable data
            return self._write(error_data(DBOSException(str(exc))), "an error")

    def decode_error(self, data: bytes) -> BaseException:
        """A :class:`PortableWorkflowError`."""
        return error_from_data(self._read(data))

    def coerce_inputs(self, func: Callable[..., Any], inputs: Inputs) -> Inputs:
        """Strings back into the datetime/date/Decimal parameters ``func`` declares."""
        return coerce_to_hints(func, *inputs)


def _codec_for(serializer: Serializer) -> Codec:
    if type(serializer) is DefaultSerializer:
        return NATIVE  # the same pickle, stored raw as before formats existed
    if serializer.name() == PORTABLE_FORMAT:
        return PortableCodec(serializer)
    return SerializerCodec(serializer)


class Codecs:
    """The codecs of one process (a DBOS or a DBOSClient): the application's, for writing
    by default, and every format it can read, by name."""

    __slots__ = ("_by_name", "app")

    def __init__(self, serializer: Serializer | None = None) -> None:
        #: What values are written in unless told otherwise (DBOS's DEFAULT).
        self.app: Codec = NATIVE if serializer is None else _codec_for(serializer)
        self._by_name: dict[str | None, Codec] = {
            None: NATIVE,
            PICKLE_FORMAT: SerializerCodec(DefaultSerializer()),
            PORTABLE_FORMAT: PortableCodec(),
        }
        if self.app.format is not None:
            self._by_name[self.app.format] = self.app

    def for_type(self, kind: WorkflowSerializationFormat | None) -> Codec:
        """The codec a value (or a workflow) of this serialization type is written in."""
        if kind is None or kind == WorkflowSerializationFormat.DEFAULT:
            return self.app
        if kind == WorkflowSerializationFormat.PORTABLE:
            return self._by_name[PORTABLE_FORMAT]
        return NATIVE

    def get(self, format: str | None) -> Codec:
        """The codec that reads values stored in ``format``; a format no serializer here
        writes raises :class:`DBOSSerializationError` naming it."""
        codec = self._by_name.get(format)
        if codec is None:
            known = ", ".join(repr(name) for name in self._by_name if name is not None)
            raise DBOSSerializationError(
                f"a value is stored in the format {format!r}, which no serializer of this "
                f"process reads (it reads native pickle, {known}); configure the serializer "
                "named so to read it"
            )
        return codec

    def decode(self, data: bytes | None, format: str | None) -> Any:
        """A stored value, read by the codec of its format."""
        if format is None:
            return deserialize(data)  # the common case: no lookup
        return self.get(format).decode(data)

    def decode_error(self, data: bytes, format: str | None) -> BaseException:
        """A stored error, read by the codec of its format."""
        if format is None:
            return deserialize_exception(data)
        return self.get(format).decode_error(data)

    def inputs(self, data: bytes | None, format: str | None) -> Inputs | None:
        """A workflow's stored arguments, read by the codec of its format."""
        if data is None:
            return None
        if format is None:
            args, kwargs = deserialize(data)
            return args, kwargs
        return self.get(format).decode_inputs(data)

    def read_inputs(
        self, func: Callable[..., Any], data: bytes | None, format: str | None
    ) -> tuple[Codec, tuple[Any, ...], dict[str, Any]]:
        """A stored workflow's codec (its output and error are written in it) and its
        arguments as ``func`` takes them."""
        codec = self.get(format)
        if data is None:
            return codec, (), {}
        args, kwargs = codec.coerce_inputs(func, codec.decode_inputs(data))
        return codec, tuple(args), dict(kwargs)


def check_serializer(value: Any) -> bool:
    """True for a value the ``serializer`` configuration key (or argument) accepts."""
    return value is None or isinstance(value, Serializer)
