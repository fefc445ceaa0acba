"""What the system database's rows hold: status values, timestamps and the row types.

A row type is a frozen dataclass whose fields are columns of one table of :mod:`._schema`,
the one declaration of the columns. The type derives its ``SELECT`` list from its fields
(:meth:`TableRow.columns`, labelled with the field names) and is built from a result row by
name (:meth:`TableRow.from_mapping`), never by position: a column added to a table and to a
row type is read everywhere that type is, with no list to keep in step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import sqlalchemy as sa

from ._schema import operation_outputs, workflow_status

PENDING = "PENDING"
SUCCESS = "SUCCESS"
ERROR = "ERROR"
CANCELLED = "CANCELLED"
ENQUEUED = "ENQUEUED"
#: DBOS's status of a workflow enqueued with a delay, until it is due (then ENQUEUED).
DELAYED = "DELAYED"
MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
TERMINAL = (SUCCESS, ERROR, CANCELLED)


def now_ms() -> int:
    """Wall-clock epoch milliseconds, the unit of every timestamp in the database."""
    return int(time.time() * 1000)


# Per row type, computed once (class attributes would become slots of the dataclass).
_FIELDS: dict[type, tuple[str, ...]] = {}
_COLUMNS: dict[type, tuple[sa.ColumnElement[Any], ...]] = {}


class TableRow:
    """Base of a row type: its dataclass fields are columns of ``TABLE``.

    A field is named as its column unless ``RENAMED`` maps it to another column (the
    public names predate the DBOS column names, e.g. ``workflow_id`` for ``workflow_uuid``).
    """

    __slots__ = ()

    TABLE: ClassVar[sa.Table]
    #: Field name -> column name, for fields not named as their column.
    RENAMED: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields, in declaration order."""
        names = _FIELDS.get(cls)
        if names is None:
            names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        return names

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        """The table columns of the fields, in field order."""
        return tuple(cls.RENAMED.get(name, name) for name in cls.field_names())

    @classmethod
    def columns(cls) -> tuple[sa.ColumnElement[Any], ...]:
        """The ``SELECT`` (or ``RETURNING``) list of this row: each column labelled with its
        field name, so :meth:`from_mapping` reads ``row._mapping`` by name."""
        columns = _COLUMNS.get(cls)
        if columns is None:
            table = cls.TABLE
            columns = _COLUMNS[cls] = tuple(
                table.c[column].label(name) if column != name else table.c[column]
                for name, column in zip(cls.field_names(), cls.column_names(), strict=True)
            )
        return columns

    @classmethod
    def sql_list(cls) -> str:
        """The columns as a driver-SQL ``SELECT``/``RETURNING`` list, each named as its field."""
        return ", ".join(
            f"{column} AS {name}" if column != name else name
            for name, column in zip(cls.field_names(), cls.column_names(), strict=True)
        )

    @classmethod
    def from_mapping(cls, mapping: Mapping[Any, Any]) -> Self:
        """The row from a result row's ``_mapping`` (keys: the field names)."""
        return cls(**{name: mapping[name] for name in cls.field_names()})

    @classmethod
    def check(cls) -> None:
        """Fail at import when a field names no column of the table (a typo, or a column
        the schema does not declare yet)."""
        missing = [c for c in cls.column_names() if c not in cls.TABLE.c]
        if missing:
            raise TypeError(f"{cls.__name__}: no column {missing} in {cls.TABLE.name}")


@dataclass(frozen=True, slots=True)
class StatusRow(TableRow):
    """One workflow's status row (the columns a caller reads; not the queue's bookkeeping)."""

    TABLE: ClassVar[sa.Table] = workflow_status
    RENAMED: ClassVar[Mapping[str, str]] = {"workflow_id": "workflow_uuid"}

    workflow_id: str
    status: str
    name: str
    inputs: bytes | None
    output: bytes | None
    error: bytes | None
    executor_id: str
    application_version: str | None
    created_at: int
    updated_at: int
    recovery_attempts: int
    parent_workflow_id: str | None
    workflow_timeout_ms: int | None
    workflow_deadline_epoch_ms: int | None
    queue_name: str | None
    queue_partition_key: str | None
    #: The format of inputs, output and error (None: native pickle).
    serialization: str | None


@dataclass(frozen=True, slots=True)
class StepRow(TableRow):
    """One recorded step outcome."""

    TABLE: ClassVar[sa.Table] = operation_outputs

    function_id: int
    function_name: str
    output: bytes | None
    error: bytes | None
    child_workflow_id: str | None
    completed_at: int
    #: The format of output and error (None: native pickle).
    serialization: str | None = None
    started_at_epoch_ms: int | None = None

    @property
    def started_at(self) -> int:
        """When the operation began. A one-statement write (send, set_event, a stream
        write, recv's take) records no start: it began when it committed."""
        started = self.started_at_epoch_ms
        return self.completed_at if started is None else started


StatusRow.check()
StepRow.check()
