"""The system database layer: one declaration of the columns, and nothing imported from above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa

from spindle.runtime._queue_db import Dequeued
from spindle.runtime._rows import StatusRow, StepRow, TableRow
from spindle.runtime._schema import workflow_status
from spindle.runtime._sysdb_hot import HotInsert

RUNTIME = Path(__file__).resolve().parents[2] / "spindle" / "runtime"

#: The database layer, and what it may import of the rest of the runtime besides itself.
DATABASE_LAYER = {
    "_schema",
    "_rows",
    "_migrations",
    "_sysdb_engine",
    "_sysdb_gate",
    "_sysdb_hot",
    "_group_commit",
    "_sysdb",
    "_queue_db",
    "_queue_delays",
    "_messaging_db",
    "_admin_db",
    "_db_retry",
}
LEAVES = {"_errors", "_serialization"}


def _runtime_imports(module: str) -> set[str]:
    """Every runtime module ``module`` imports: type-only and in-function imports too."""
    tree = ast.parse((RUNTIME / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "spindle.runtime._"
        ):
            found.add((node.module or "").rsplit(".", 1)[1])
    return found


@pytest.mark.parametrize("module", sorted(DATABASE_LAYER))
def test_the_database_layer_imports_nothing_above_it(module: str) -> None:
    assert _runtime_imports(module) <= DATABASE_LAYER | LEAVES


@pytest.mark.parametrize("row", [StatusRow, StepRow, Dequeued])
def test_row_types_select_their_columns_by_name(row: type[TableRow]) -> None:
    """Each field is a column of the row's table, selected under the field's name."""
    row.check()
    columns = row.columns()
    assert [c.name for c in columns] == list(row.field_names())
    assert all(c in row.TABLE.c for c in row.column_names())


def test_a_row_type_naming_an_undeclared_column_fails() -> None:
    class Broken(TableRow):
        TABLE = workflow_status

        @classmethod
        def field_names(cls) -> tuple[str, ...]:
            return ("workflow_uuid", "no_such_column")

    with pytest.raises(TypeError, match="no_such_column"):
        Broken.check()


def test_hot_inserts_take_exactly_their_columns_by_name() -> None:
    insert = HotInsert(workflow_status, ("workflow_uuid", "name"), is_sqlite=True)
    assert insert.sql == "INSERT INTO workflow_status (workflow_uuid, name) VALUES (?, ?)"
    assert insert.params({"name": "n", "workflow_uuid": "w"}) == ("w", "n")
    with pytest.raises(TypeError, match="missing"):
        insert.params({"workflow_uuid": "w"})
    with pytest.raises(TypeError, match="unknown"):
        insert.params({"workflow_uuid": "w", "name": "n", "status": "x"})
    with pytest.raises(KeyError):
        HotInsert(workflow_status, ("no_such_column",), is_sqlite=True)


def test_a_guarded_insert_casts_each_value_to_its_column_type_on_postgres() -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("a", sa.Text), sa.Column("b", sa.BigInteger))
    insert = HotInsert(table, ("a", "b"), is_sqlite=False, guard="a = %s", guard_params=("a",))
    assert insert.sql == "INSERT INTO dbos.t (a, b) SELECT %s::TEXT, %s::BIGINT WHERE a = %s"
    assert insert.params({"a": "x", "b": 1}) == ("x", 1, "x")
