"""DBOS 2.30's pluggable serializer on both backends: every stored value kind under the
default (pickle), portable JSON and a custom (compressing) serializer, each row recording
its format; a change of serializer between runs with a workflow pending; portable workflows
started by a DBOSClient and by plain SQL, and their errors in portable form."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import logging
import pickle
import zlib
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import (
    DBOS,
    DBOSClient,
    DBOSPortableJSONSerializer,
    DBOSSerializationError,
    PortableWorkflowError,
    Queue,
    Serializer,
    SetWorkflowID,
    WorkflowSerializationFormat,
)
from spindle.runtime._schema import (
    notifications,
    operation_outputs,
    streams,
    workflow_events,
    workflow_schedules,
    workflow_status,
)
from tests.conftest import MakeDBOS

PORTABLE = WorkflowSerializationFormat.PORTABLE


class ZlibPickle(Serializer):
    """A custom serializer: pickle, compressed, base64 (what an app might do for big rows)."""

    def serialize(self, data: Any) -> str:
        return base64.b64encode(zlib.compress(pickle.dumps(data))).decode("ascii")

    def deserialize(self, serialized_data: str) -> Any:
        return pickle.loads(zlib.decompress(base64.b64decode(serialized_data)))

    def name(self) -> str:
        return "zlib_pickle"


#: The serializers of the round-trip test and the format each writes (None: native).
SERIALIZERS: dict[str, tuple[Serializer | None, str | None]] = {
    "default": (None, None),
    "portable": (DBOSPortableJSONSerializer(), "portable_json"),
    "custom": (ZlibPickle(), "zlib_pickle"),
}

ser_queue = Queue("ser-portable-queue")


@DBOS.step()
def ser_step(x: int) -> dict[str, int]:
    return {"step": x}


@DBOS.workflow()
def ser_values(n: int, *, label: str) -> dict[str, Any]:
    got = ser_step(n)
    DBOS.set_event("ev", {"event": label})
    DBOS.write_stream("st", [n, label])
    DBOS.close_stream("st")
    msg = DBOS.recv("topic", timeout_seconds=30)
    return {"step": got, "msg": msg}


@DBOS.workflow()
def ser_fails(reason: str) -> None:
    raise ValueError(reason)


@DBOS.workflow()
def ser_sched(scheduled_time: datetime.datetime, context: Any) -> Any:
    return context


@DBOS.workflow()
def ser_waits(x: int) -> list[Any]:
    first = ser_step(x)
    DBOS.set_event("ready", True)
    return [first, DBOS.recv("go", timeout_seconds=60)]


@DBOS.workflow(serialization_type=PORTABLE)
def ser_portable(
    when: datetime.datetime, amount: decimal.Decimal, *, tags: list[str]
) -> dict[str, Any]:
    DBOS.set_event("seen", {"year": when.year}, serialization_type=PORTABLE)
    # JSON types only: a handle in this process (the in-memory result) and one reading the
    # row (the JSON) then see the same value.
    return {"when": when.isoformat(), "amount": str(amount * 2), "tags": tags}


@DBOS.workflow(serialization_type=PORTABLE)
def ser_portable_fails(kind: str) -> None:
    if kind == "plain":
        raise KeyError("k")
    raise PortableWorkflowError("bad order", "OrderError", code=409, data={"order": 7})


def _formats(table: sa.Table, where: sa.ColumnElement[bool]) -> set[str | None]:
    with DBOS.runtime.sysdb.engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(table.c.serialization).where(where))}


def _text(column: str, table: str, where: str, db_url: str, **params: Any) -> Any:
    """A value column read by plain SQL as JSON text (as any SQL client reads a portable row)."""
    sqlite = db_url.startswith("sqlite")
    expr = f"CAST({column} AS TEXT)" if sqlite else f"convert_from({column}, 'UTF8')"
    prefix = "" if sqlite else "dbos."
    with DBOS.runtime.sysdb.engine.connect() as conn:
        text = conn.execute(
            sa.text(f"SELECT {expr} FROM {prefix}{table} WHERE {where}"), params
        ).scalar_one()
    return json.loads(text)


@pytest.mark.parametrize("kind", sorted(SERIALIZERS))
def test_every_value_kind_round_trips_and_records_its_format(
    make_dbos: MakeDBOS, kind: str
) -> None:
    """Inputs, output, error, step output, event, message, stream value and schedule
    context go through the configured serializer and come back; each row names it."""
    serializer, fmt = SERIALIZERS[kind]
    make_dbos(serializer=serializer).launch()
    wid = f"ser-values-{kind}"
    with SetWorkflowID(wid):
        handle = DBOS.start_workflow(ser_values, 2, label="x")
    assert DBOS.get_event(wid, "ev", timeout_seconds=30) == {"event": "x"}
    DBOS.send(wid, {"m": [1, 2]}, "topic")
    assert handle.get_result() == {"step": {"step": 2}, "msg": {"m": [1, 2]}}
    # Read back from the rows (not the in-memory result): a handle made anew reads them.
    assert DBOS.retrieve_workflow(wid).get_result() == {"step": {"step": 2}, "msg": {"m": [1, 2]}}
    assert list(DBOS.read_stream(wid, "st")) == [[2, "x"]]
    status = DBOS.get_workflow_status(wid)
    assert status is not None
    assert (list(status.input[0]), status.input[1]) == ([2], {"label": "x"})
    steps = DBOS.list_workflow_steps(wid)
    assert steps[0]["output"] == {"step": 2}
    assert DBOS.get_all_events(wid) == {"ev": {"event": "x"}}

    with SetWorkflowID(f"ser-fails-{kind}"):
        fail = DBOS.start_workflow(ser_fails, "no luck")
    with pytest.raises(ValueError, match="no luck"):
        fail.get_result()  # in this process: the error as raised
    # Read from its row: in portable form when the app writes portable JSON.
    expected = PortableWorkflowError if kind == "portable" else ValueError
    with pytest.raises(expected, match="no luck"):
        DBOS.retrieve_workflow(f"ser-fails-{kind}").get_result()

    DBOS.create_schedule(
        schedule_name=f"ser-ctx-{kind}",
        workflow_fn=ser_sched,
        schedule="0 0 1 1 *",
        context={"ctx": [1]},
    )
    schedule = DBOS.get_schedule(f"ser-ctx-{kind}")
    assert schedule is not None
    assert schedule["context"] == {"ctx": [1]}

    for table, where in (
        (workflow_status, workflow_status.c.workflow_uuid.in_([wid, f"ser-fails-{kind}"])),
        (operation_outputs, operation_outputs.c.workflow_uuid == wid),
        (workflow_events, workflow_events.c.workflow_uuid == wid),
        (streams, streams.c.workflow_uuid == wid),
        (workflow_schedules, workflow_schedules.c.schedule_name == f"ser-ctx-{kind}"),
    ):
        assert _formats(table, where) - {None} <= {fmt}, table.name
    assert _formats(workflow_status, workflow_status.c.workflow_uuid == wid) == {fmt}
    # The recv checkpoint holds the message in the format it was sent in.
    recv = (operation_outputs.c.workflow_uuid == wid) & (
        operation_outputs.c.function_name == "DBOS.recv"
    )
    assert _formats(operation_outputs, recv) == {fmt}
    if kind == "custom":
        with DBOS.runtime.sysdb.engine.connect() as conn:
            output = conn.execute(
                sa.select(workflow_status.c.output).where(workflow_status.c.workflow_uuid == wid)
            ).scalar_one()
        # What the custom serializer wrote, not pickle: its compressed base64 text.
        assert ZlibPickle().deserialize(bytes(output).decode()) == {
            "step": {"step": 2},
            "msg": {"m": [1, 2]},
        }


def test_values_of_a_chosen_serialization_type_override_the_application_serializer(
    make_dbos: MakeDBOS, db_url: str
) -> None:
    """send/set_event/write_stream with serialization_type write that format whatever the
    application's serializer; readers read each value in its own format."""
    make_dbos(serializer=ZlibPickle()).launch()
    with SetWorkflowID("ser-override"):
        handle = DBOS.start_workflow(ser_waits, 5)
    assert DBOS.get_event("ser-override", "ready", timeout_seconds=30) is True
    DBOS.send("ser-override", {"portable": True}, "go", serialization_type=PORTABLE)
    assert handle.get_result() == [{"step": 5}, {"portable": True}]
    recv = (operation_outputs.c.workflow_uuid == "ser-override") & (
        operation_outputs.c.function_name == "DBOS.recv"
    )
    assert _formats(operation_outputs, recv) == {"portable_json"}
    assert _text(
        "output",
        "operation_outputs",
        "workflow_uuid = :w AND function_name = 'DBOS.recv'",
        db_url,
        w="ser-override",
    ) == {"portable": True}
    step = (operation_outputs.c.workflow_uuid == "ser-override") & (
        operation_outputs.c.function_name == "ser_step"
    )
    assert _formats(operation_outputs, step) == {"zlib_pickle"}


def test_a_change_of_serializer_leaves_pending_and_finished_workflows_readable(
    make_dbos: MakeDBOS, caplog: pytest.LogCaptureFixture
) -> None:
    """Run 1 (pickle) leaves a workflow pending; run 2 (custom serializer) recovers it and
    ends it in its own format, reading run 1's step; a run without the custom serializer
    refuses its rows with a clear error and leaves its pending workflow for a run that has
    it (run 4 finishes it)."""
    make_dbos().launch()
    with SetWorkflowID("ser-a"):
        DBOS.start_workflow(ser_waits, 1)
    assert DBOS.get_event("ser-a", "ready", timeout_seconds=30) is True
    DBOS.destroy()  # ser-a stays PENDING, its step recorded in pickle

    make_dbos(serializer=ZlibPickle()).launch()
    DBOS.send("ser-a", "go a", "go")
    assert DBOS.retrieve_workflow("ser-a").get_result() == [{"step": 1}, "go a"]
    assert _formats(workflow_status, workflow_status.c.workflow_uuid == "ser-a") == {None}
    with SetWorkflowID("ser-b"):
        DBOS.start_workflow(ser_waits, 2)
    assert DBOS.get_event("ser-b", "ready", timeout_seconds=30) is True
    with SetWorkflowID("ser-c"):
        assert ser_sched(datetime.datetime.now(datetime.UTC), "c") == "c"
    DBOS.destroy()  # ser-b stays PENDING, written in zlib_pickle

    caplog.set_level(logging.WARNING)
    make_dbos().launch()
    done = DBOS.runtime.recovery_done
    assert done is not None
    assert done.wait(30)
    assert any(
        "ser-b" in r.getMessage() and "zlib_pickle" in r.getMessage() for r in caplog.records
    )
    status = DBOS.get_workflow_status("ser-b")
    assert status is not None
    assert status.status == "PENDING"
    with pytest.raises(DBOSSerializationError, match="'zlib_pickle'"):
        DBOS.retrieve_workflow("ser-c").get_result()
    assert DBOS.retrieve_workflow("ser-a").get_result() == [{"step": 1}, "go a"]
    DBOS.destroy()

    make_dbos(serializer=ZlibPickle()).launch()
    DBOS.send("ser-b", "go b", "go")
    assert DBOS.retrieve_workflow("ser-b").get_result() == [{"step": 2}, "go b"]


def test_portable_workflow_enqueued_by_a_client_and_its_errors(
    make_dbos: MakeDBOS, db_url: str
) -> None:
    """A DBOSClient enqueues a portable workflow (whatever its own serializer): the row holds
    DBOS's portable JSON, the workflow gets its annotated types back, the client reads the
    result as JSON; errors come back as PortableWorkflowError with name, code and data."""
    make_dbos().launch()
    client = DBOSClient(system_database_url=db_url, serializer=ZlibPickle())
    try:
        options: Any = {
            "workflow_name": ser_portable.__qualname__,
            "queue_name": ser_queue.name,
            "workflow_id": "ser-client",
            "serialization_type": PORTABLE,
        }
        when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        handle = client.enqueue(options, when, decimal.Decimal("1.25"), tags=["a"])
        # The workflow got a datetime and a Decimal back (isoformat, arithmetic).
        assert handle.get_result() == {
            "when": "2024-01-02T03:04:05+00:00",
            "amount": "2.50",
            "tags": ["a"],
        }
        assert client.get_event("ser-client", "seen") == {"year": 2024}
        assert _text("inputs", "workflow_status", "workflow_uuid = :w", db_url, w="ser-client") == {
            "positionalArgs": ["2024-01-02T03:04:05.000Z", "1.25"],
            "namedArgs": {"tags": ["a"]},
        }
        assert _formats(workflow_status, workflow_status.c.workflow_uuid == "ser-client") == {
            "portable_json"
        }

        for kind in ("plain", "chosen"):
            options = {
                "workflow_name": ser_portable_fails.__qualname__,
                "queue_name": ser_queue.name,
                "workflow_id": f"ser-client-{kind}",
                "serialization_type": PORTABLE,
            }
            with pytest.raises(PortableWorkflowError) as raised:
                client.enqueue(options, kind).get_result()
            data = _text(
                "error", "workflow_status", "workflow_uuid = :w", db_url, w=f"ser-client-{kind}"
            )
            if kind == "plain":
                assert (raised.value.name, raised.value.message) == ("KeyError", "'k'")
                assert data == {"name": "KeyError", "message": "'k'", "code": None}
            else:
                err = raised.value
                assert (err.name, err.message, err.code, err.data) == (
                    "OrderError",
                    "bad order",
                    409,
                    {"order": 7},
                )
                assert data == {
                    "name": "OrderError",
                    "message": "bad order",
                    "code": 409,
                    "data": {"order": 7},
                }
    finally:
        client.destroy()


def test_a_portable_workflow_started_and_read_by_plain_sql(
    make_dbos: MakeDBOS, db_url: str
) -> None:
    """As DBOS documents: a row inserted by SQL alone (portable JSON inputs, format
    ``portable_json``) is run by the app's queue worker, and its output, event and the
    message it received are JSON any SQL client reads."""
    make_dbos().launch()
    sqlite = db_url.startswith("sqlite")
    prefix = "" if sqlite else "dbos."
    # SQLite takes the JSON as text; PostgreSQL's bytea column takes its UTF-8 bytes.
    value = ":inputs" if sqlite else "convert_to(:inputs, 'UTF8')"
    inputs = json.dumps(
        {"positionalArgs": ["2025-06-01T00:00:00Z", "3"], "namedArgs": {"tags": []}}
    )
    with DBOS.runtime.sysdb.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {prefix}workflow_status (workflow_uuid, status, name, queue_name,"
                " inputs, serialization, executor_id, created_at, updated_at)"
                f" VALUES ('ser-sql', 'ENQUEUED', :name, :queue, {value}, 'portable_json',"
                " 'sql', 0, 0)"
            ),
            {"name": ser_portable.__qualname__, "queue": ser_queue.name, "inputs": inputs},
        )
    expected = {"when": "2025-06-01T00:00:00+00:00", "amount": "6", "tags": []}
    assert DBOS.retrieve_workflow("ser-sql").get_result() == expected
    assert _text("output", "workflow_status", "workflow_uuid = 'ser-sql'", db_url) == expected
    assert _text("value", "workflow_events", "workflow_uuid = 'ser-sql'", db_url) == {"year": 2025}

    # A message written by SQL to a workflow waiting for it.
    with SetWorkflowID("ser-sql-recv"):
        handle = DBOS.start_workflow(ser_waits, 9)
    assert DBOS.get_event("ser-sql-recv", "ready", timeout_seconds=30) is True
    message = ":m" if sqlite else "convert_to(:m, 'UTF8')"
    with DBOS.runtime.sysdb.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {prefix}notifications (destination_uuid, topic, message,"
                " created_at_epoch_ms, message_uuid, serialization)"
                f" VALUES ('ser-sql-recv', 'go', {message}, 0, 'sql-1', 'portable_json')"
            ),
            {"m": json.dumps({"from": "sql"})},
        )
    # SQLite has no trigger to wake the receiver: the listener's poll finds the row.
    assert handle.get_result() == [{"step": 9}, {"from": "sql"}]
    assert _formats(notifications, notifications.c.destination_uuid == "ser-sql-recv") == set()


def test_an_older_schema_gains_the_format_columns_and_its_rows_read_as_pickle(
    make_dbos: MakeDBOS, db_url: str
) -> None:
    """A database from before formats (no ``serialization`` column, an older version) is migrated
    on launch; its rows, NULL there, are read as the pickle they are."""
    from spindle.runtime._migrations import _VALUE_TABLES, MIGRATIONS, _v11_serialization

    make_dbos().launch()
    with SetWorkflowID("ser-old"):
        assert ser_sched(datetime.datetime.now(datetime.UTC), {"old": 1}) == {"old": 1}
    engine = DBOS.runtime.sysdb.engine
    prefix = "" if db_url.startswith("sqlite") else "dbos."
    DBOS.destroy()
    old = sa.create_engine(engine.url)
    try:
        with old.begin() as conn:
            for table in _VALUE_TABLES:
                conn.exec_driver_sql(f"ALTER TABLE {prefix}{table} DROP COLUMN serialization")
            conn.exec_driver_sql(
                # The version before the one that adds the columns, wherever it lands.
                f"UPDATE {prefix}spindle_schema_version"
                f" SET version = {MIGRATIONS.index(_v11_serialization)}"
            )
    finally:
        old.dispose()
    make_dbos().launch()
    assert DBOS.retrieve_workflow("ser-old").get_result() == {"old": 1}
    assert _formats(workflow_status, workflow_status.c.workflow_uuid == "ser-old") == {None}
