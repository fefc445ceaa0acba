"""The portable JSON format and the format registry, without a database: what each Python
type becomes, DBOS's portable argument and error shapes, and the errors a bad value or an
unknown format raises."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import pytest

from spindle import (
    DBOSException,
    DBOSPortableJSONSerializer,
    DBOSSerializationError,
    DefaultSerializer,
    PortableWorkflowError,
    Serializer,
    WorkflowSerializationFormat,
)
from spindle.runtime._serialization import NATIVE, Codecs, PortableCodec, SerializerCodec

PORTABLE = DBOSPortableJSONSerializer()


def test_portable_json_is_compact_and_converts_what_json_lacks() -> None:
    """datetime (UTC, milliseconds, Z), date, Decimal, tuple and set become JSON values, as
    DBOS writes them; the JSON has no whitespace."""
    value = {
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC),
        "shifted": datetime.datetime(
            2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        ),
        "naive": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "day": datetime.date(2024, 1, 2),
        "amount": decimal.Decimal("1.10"),
        "pair": (1, 2),
        "set": {3},
        "nested": [None, True, 1.5, "é"],
    }
    text = PORTABLE.serialize(value)
    assert " " not in text
    assert json.loads(text) == {
        "when": "2024-01-02T03:04:05.123Z",
        "shifted": "2024-01-02T01:04:05.000Z",
        "naive": "2024-01-02T03:04:05.000Z",
        "day": "2024-01-02",
        "amount": "1.10",
        "pair": [1, 2],
        "set": [3],
        "nested": [None, True, 1.5, "é"],
    }
    assert PORTABLE.deserialize(text) == json.loads(text)
    assert PORTABLE.deserialize(None) is None
    assert PORTABLE.name() == "portable_json"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1: "a"}, "non-string keys"),
        (b"bytes", "bytes is not portable"),
        (object(), "object is not portable"),
    ],
)
def test_portable_json_refuses_what_has_no_portable_form(value: Any, message: str) -> None:
    """A value other languages could not read is refused, naming what is wrong."""
    with pytest.raises(TypeError, match=message):
        PORTABLE.serialize(value)


def test_portable_codec_writes_dbos_argument_and_error_shapes() -> None:
    """Inputs are {"positionalArgs", "namedArgs"}; an error is {name, message, code}; a
    PortableWorkflowError keeps its code and data; reading gives PortableWorkflowError."""
    codec = PortableCodec()
    data = codec.encode_inputs((1, "two"), {"k": [3]}, "inputs")
    assert json.loads(data) == {"positionalArgs": [1, "two"], "namedArgs": {"k": [3]}}
    assert codec.decode_inputs(data) == ((1, "two"), {"k": [3]})
    assert codec.decode_inputs(b'{"positionalArgs":[5]}') == ((5,), {})

    class Coded(Exception):
        code = 42

    stored = codec.encode_error(Coded("boom"))
    assert json.loads(stored) == {"name": "Coded", "message": "boom", "code": 42}
    err = codec.decode_error(stored)
    assert isinstance(err, PortableWorkflowError)
    assert (err.name, err.message, err.code, str(err)) == ("Coded", "boom", 42, "boom")

    chosen = PortableWorkflowError("bad input", "InputError", code="E1", data={"field": "x"})
    back = codec.decode_error(codec.encode_error(chosen))
    assert isinstance(back, PortableWorkflowError)
    assert back.to_error_data() == chosen.to_error_data()
    assert chosen.to_error_data() == {
        "name": "InputError",
        "message": "bad input",
        "code": "E1",
        "data": {"field": "x"},
    }
    assert PortableWorkflowError("m", "N").to_error_data() == {"name": "N", "message": "m"}


def test_portable_inputs_are_coerced_to_the_parameters_annotations() -> None:
    """A portable datetime/date/Decimal argument arrives as the type the workflow declares."""

    def body(
        when: datetime.datetime, day: datetime.date, n: int, *, amount: decimal.Decimal
    ) -> None:
        del when, day, n, amount

    args, kwargs = PortableCodec().coerce_inputs(
        body, (("2024-01-02T03:04:05.123Z", "2024-01-02", 3), {"amount": "1.5"})
    )
    assert args == (
        datetime.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=datetime.UTC),
        datetime.date(2024, 1, 2),
        3,
    )
    assert kwargs == {"amount": decimal.Decimal("1.5")}
    assert NATIVE.coerce_inputs(body, (("x",), {})) == (("x",), {})


def test_codecs_choose_the_format_of_each_serialization_type() -> None:
    """DEFAULT is the application's serializer, PORTABLE portable JSON, NATIVE pickle; with
    no serializer (or DBOS's DefaultSerializer) the application writes native rows (NULL)."""

    class Custom(Serializer):
        def serialize(self, data: Any) -> str:
            return DefaultSerializer().serialize(data)

        def deserialize(self, serialized_data: str) -> Any:
            return DefaultSerializer().deserialize(serialized_data)

        def name(self) -> str:
            return "custom"

    for plain in (None, DefaultSerializer()):
        codecs = Codecs(plain)
        assert codecs.app is NATIVE
        assert codecs.for_type(None).format is None
    custom = Codecs(Custom())
    assert custom.for_type(WorkflowSerializationFormat.DEFAULT).format == "custom"
    assert custom.for_type(WorkflowSerializationFormat.PORTABLE).format == "portable_json"
    assert custom.for_type(WorkflowSerializationFormat.NATIVE) is NATIVE
    assert Codecs(DBOSPortableJSONSerializer()).app.format == "portable_json"
    # DBOS's own py_pickle rows (base64 text) stay readable whatever is configured.
    assert custom.decode(DefaultSerializer().serialize({"a": 1}).encode(), "py_pickle") == {"a": 1}
    assert str(WorkflowSerializationFormat.PORTABLE) == "WorkflowSerializationFormat.PORTABLE"
    assert WorkflowSerializationFormat("None") is WorkflowSerializationFormat.DEFAULT


def test_an_unknown_format_raises_a_serialization_error_naming_it() -> None:
    """A row written by a serializer this process lacks is refused clearly, not with a
    traceback from pickle or json."""
    with pytest.raises(DBOSSerializationError, match="'zstd_v9'"):
        Codecs().decode(b"whatever", "zstd_v9")
    with pytest.raises(DBOSSerializationError, match="portable_json"):
        PortableCodec().decode(b"{not json")


def test_a_serializer_that_fails_raises_a_serialization_error() -> None:
    """A serializer's own failure reaches the caller as DBOSSerializationError naming what
    was being stored; an error it cannot hold is recorded as its text instead."""

    class Strict(Serializer):
        def serialize(self, data: Any) -> str:
            if isinstance(data, BaseException):
                raise TypeError("no exceptions")
            return json.dumps(data)

        def deserialize(self, serialized_data: str) -> Any:
            return json.loads(serialized_data)

        def name(self) -> str:
            return "strict_json"

    codec = SerializerCodec(Strict())
    with pytest.raises(DBOSSerializationError, match=r"the output of step 'x'.*strict_json"):
        codec.encode(object(), "the output of step 'x'")
    err = codec.decode_error(codec.encode_error(ValueError("lost")))
    assert isinstance(err, DBOSException)
    assert "ValueError: lost" in str(err)


def test_a_client_with_a_bad_serializer_raises_at_construction_naming_it(tmp_path: Any) -> None:
    """DBOSClient(serializer=...) takes a Serializer or None; anything else is refused
    before any connection is made."""
    from spindle import DBOSClient

    with pytest.raises(DBOSException, match="serializer must be a Serializer"):
        DBOSClient(system_database_url=f"sqlite:///{tmp_path}/c.sqlite", serializer="json")  # type: ignore[arg-type]
