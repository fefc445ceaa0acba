"""Config keys whose effect nothing else pins: sqlite_synchronous, admin_host, DBOS__VMID."""

from __future__ import annotations

import socket

import httpx
import pytest
import sqlalchemy as sa

from spindle import DBOS, DBOSConfigError
from spindle.runtime._config import load_config
from spindle.runtime._schema import workflow_status as ws
from tests.conftest import MakeDBOS

# PRAGMA synchronous reads back as a number.
SYNCHRONOUS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}


@DBOS.workflow()
def config_workflow(x: int) -> int:
    return x + 1


def _pragma_synchronous() -> int:
    with DBOS.runtime.sysdb.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


@pytest.mark.parametrize("setting", [None, "NORMAL", "EXTRA"])
def test_sqlite_synchronous_is_what_the_system_database_runs_with(
    make_dbos: MakeDBOS, db_url: str, setting: str | None
) -> None:
    """Default FULL (every commit fsynced); a configured level is what SQLite runs with.
    PostgreSQL takes the key and ignores it."""
    overrides = {} if setting is None else {"sqlite_synchronous": setting}
    make_dbos(**overrides).launch()
    assert DBOS.start_workflow(config_workflow, 1).get_result() == 2
    if not db_url.startswith("sqlite"):
        return
    assert _pragma_synchronous() == SYNCHRONOUS[setting or "FULL"]


def test_sqlite_synchronous_rejects_an_unknown_level() -> None:
    """A bad level raises at construction naming the key."""
    with pytest.raises(DBOSConfigError, match="'sqlite_synchronous'"):
        load_config({"name": "a", "sqlite_synchronous": "SOMETIMES"})
    assert load_config({"name": "a"}).sqlite_synchronous == "FULL"


def _can_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def test_admin_host_defaults_to_loopback(make_dbos: MakeDBOS) -> None:
    """Unconfigured, the admin server listens on 127.0.0.1 only."""
    assert load_config({"name": "a"}).admin_host == "127.0.0.1"
    make_dbos(run_admin_server=True, admin_port=0).launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{url}/dbos-healthz", timeout=10).text == "healthy"


def test_admin_host_is_the_address_the_server_binds(make_dbos: MakeDBOS) -> None:
    """admin_host=127.0.0.2 (another loopback address): served there, not on 127.0.0.1."""
    make_dbos(run_admin_server=True, admin_port=0, admin_host="127.0.0.2").launch()
    url = DBOS.runtime.admin_url
    assert url is not None
    assert url.startswith("http://127.0.0.2:")
    port = int(url.rsplit(":", 1)[1])
    assert httpx.get(f"{url}/dbos-healthz", timeout=10).status_code == 200
    assert not _can_connect("127.0.0.1", port)


def test_admin_host_rejects_an_empty_host() -> None:
    """An empty host raises at construction naming the key."""
    with pytest.raises(DBOSConfigError, match="'admin_host'"):
        load_config({"name": "a", "admin_host": ""})


def test_executor_id_defaults_to_dbos_vmid(monkeypatch: pytest.MonkeyPatch) -> None:
    """executor_id: the configured one, else DBOS__VMID, else ``local``."""
    monkeypatch.delenv("DBOS__VMID", raising=False)
    assert load_config({"name": "a"}).executor_id == "local"
    monkeypatch.setenv("DBOS__VMID", "vm-7")
    assert load_config({"name": "a"}).executor_id == "vm-7"
    assert load_config({"name": "a", "executor_id": "mine"}).executor_id == "mine"


def test_workflows_are_owned_by_the_dbos_vmid_executor(
    make_dbos: MakeDBOS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow started under DBOS__VMID records that executor (recovery looks it up)."""
    monkeypatch.setenv("DBOS__VMID", "vm-42")
    make_dbos().launch()
    handle = DBOS.start_workflow(config_workflow, 2)
    assert handle.get_result() == 3
    assert handle.get_status().executor_id == "vm-42"
    with DBOS.runtime.sysdb.engine.connect() as conn:
        owner = conn.execute(
            sa.select(ws.c.executor_id).where(ws.c.workflow_uuid == handle.workflow_id)
        ).scalar_one()
    assert owner == "vm-42"
