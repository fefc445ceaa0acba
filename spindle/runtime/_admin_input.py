"""Input validation at the edge of the admin API, declared once per route, shared by all.

Every admin route names the fields it takes (``Body``) and whether its path carries a
workflow ID; the edge (``Edge`` in ``_admin_api``) validates both before a handler runs, so a
value the database cannot store (a 2**64 ``limit``, a NUL in an ID, ``[1, 2]`` where strings
go) is a 400 naming the field instead of an ``OverflowError`` or a PostgreSQL error. Unknown
fields are ignored, as DBOS's admin server ignores them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The largest body any admin route reads; more is a 413 before a byte is parsed.
MAX_BODY_BYTES = 1024 * 1024
#: Deepest JSON nesting accepted; deeper is a 400 before ``json.loads`` can recurse into it.
MAX_JSON_DEPTH = 32
#: Longest workflow, executor or queue ID (DBOS IDs are UUIDs; users' own are short).
MAX_ID_CHARS = 1024
#: Longest free-text filter (a name, a time, a version).
MAX_TEXT_CHARS = 4096
#: Most items in a list field (workflow IDs to filter on, executors to recover).
MAX_LIST_ITEMS = 10_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Step numbers are ``function_id``, an INTEGER column (32-bit on PostgreSQL).
INT32_MAX = 2**31 - 1


class InputError(Exception):
    """A request the admin API refuses: ``status`` (400, 413, ...) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_text(value: Any, field: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """``value`` as a string both databases can store: no NUL, valid UTF-8, bounded."""
    if not isinstance(value, str):
        raise InputError(400, f"{field!r} must be a string, got {_kind(value)}")
    if len(value) > max_chars:
        raise InputError(400, f"{field!r} is longer than {max_chars} characters")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; SQLite would silently truncate at it.
        raise InputError(400, f"{field!r} must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in JSON) fails in the driver, not here, without this.
        raise InputError(400, f"{field!r} is not valid Unicode text") from None
    return value


def check_id(value: Any, field: str = "workflow_id") -> str:
    """A workflow/executor ID: a non-empty string of at most MAX_ID_CHARS, no NUL."""
    text = check_text(value, field, max_chars=MAX_ID_CHARS)
    if not text:
        raise InputError(400, f"{field!r} must not be empty")
    return text


def check_int(value: Any, field: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """An integer in ``[minimum, maximum]`` (by default what a 64-bit column holds)."""
    # bool is an int in Python and JSON's true would pass as 1 without this.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(400, f"{field!r} must be an integer, got {_kind(value)}")
    if not minimum <= value <= maximum:
        raise InputError(400, f"{field!r} must be between {minimum} and {maximum}, got {value}")
    return value


def check_id_list(value: Any, field: str) -> list[str]:
    """A JSON list of IDs."""
    if not isinstance(value, list):
        raise InputError(400, f"{field!r} must be a list of strings, got {_kind(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise InputError(400, f"{field!r} has more than {MAX_LIST_ITEMS} items")
    return [check_id(item, f"{field}[{i}]") for i, item in enumerate(value)]


@dataclass(frozen=True, slots=True)
class Field:
    """One body field: its kind and bounds (``None`` and a missing field both mean "unset")."""

    kind: str  # "id", "text", "int", "bool", "ids", "text_or_texts"
    minimum: int = INT64_MIN
    maximum: int = INT64_MAX

    def check(self, value: Any, name: str) -> Any:
        """The validated value, or InputError naming ``name``."""
        if self.kind == "id":
            return check_id(value, name)
        if self.kind == "text":
            return check_text(value, name)
        if self.kind == "int":
            return check_int(value, name, minimum=self.minimum, maximum=self.maximum)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InputError(400, f"{name!r} must be true or false, got {_kind(value)}")
            return value
        if self.kind == "ids":
            return check_id_list(value, name)
        if self.kind == "text_or_texts":
            if isinstance(value, list):
                return check_id_list(value, name)
            return check_text(value, name)
        raise AssertionError(f"unknown field kind {self.kind!r}")


ID = Field("id")
TEXT = Field("text")
BOOL = Field("bool")
IDS = Field("ids")
TEXT_OR_TEXTS = Field("text_or_texts")
INT64 = Field("int")
NON_NEGATIVE = Field("int", minimum=0)


@dataclass(frozen=True, slots=True)
class Body:
    """What a route's JSON body may hold: an object of ``fields``, or a list of IDs."""

    fields: Mapping[str, Field] | None = None
    id_list: bool = False

    def parse(self, raw: bytes) -> Any:
        """The validated body: a dict of the known fields that were set, or a list of IDs."""
        doc = parse_json(raw)
        if self.id_list:
            return check_id_list([] if doc is None else doc, "body")
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise InputError(400, f"the body must be a JSON object, got {_kind(doc)}")
        out: dict[str, Any] = {}
        for name, spec in (self.fields or {}).items():
            value = doc.get(name)
            if value is not None:
                out[name] = spec.check(value, name)
        return out


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON (``None`` when empty), depth checked before parsing."""
    if not raw.strip():
        return None
    if len(raw) > MAX_BODY_BYTES:
        raise InputError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    check_depth(raw)
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        # ValueError covers bad JSON, NaN/Infinity and integers past Python's digit limit.
        raise InputError(400, f"the body is not valid JSON: {exc}") from None


def check_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse nesting deeper than ``limit`` with one pass over the bytes (strings skipped).

    ``json.loads`` recurses once per level, so 5,000 ``[`` raise RecursionError inside the
    parser; counting first keeps that from ever starting.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    depth = 0
    in_string = False
    escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                raise InputError(400, f"the body is nested deeper than {limit} levels")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
