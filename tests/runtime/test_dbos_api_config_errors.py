"""DBOS 2.30's configuration keys and exception classes: every DBOSConfig key accepted
(mapped, or kept with the reason it changes nothing), "did you mean" for a typo, errors with
DBOS's classes, codes and texts that survive a round trip through the database."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import DBOS, DBOSConfigError, error
from spindle.runtime._config import load_config
from spindle.runtime._config_dbos import DBOS_KEYS, INERT
from tests.conftest import MakeDBOS

#: Every key of DBOS Transact 2.30's DBOSConfig TypedDict, with a value an app might pass.
DBOS_230_CONFIG: dict[str, Any] = {
    "name": "dbos-app",
    "system_database_url": None,
    "application_database_url": None,
    "database_url": None,
    "sys_db_pool_size": 5,
    "sys_db_polling_concurrency": 2,
    "db_engine_kwargs": {"pool_pre_ping": True},
    "log_level": "INFO",
    "otlp_log_level": "WARNING",
    "console_log_level": "INFO",
    "otlp_traces_endpoints": [],
    "otlp_logs_endpoints": ["http://collector:4318/v1/logs"],
    "admin_port": 3001,
    "run_admin_server": False,
    "otlp_attributes": {"team": "shop"},
    "application_version": "v1",
    "executor_id": "exec-1",
    "dbos_system_schema": "dbos",
    "enable_otlp": False,
    "system_database_engine": None,
    "conductor_key": None,
    "conductor_url": None,
    "conductor_executor_metadata": {"region": "eu"},
    "serializer": None,
    "enable_patching": False,
    "use_listen_notify": True,
    "run_migrations": True,
    "max_executor_threads": 8,
    "notification_listener_polling_interval_sec": 0.5,
    "notification_coalesce_sec": 0.01,
    "scheduler_polling_interval_sec": 2.0,
    "kafka_queue_polling_interval_sec": 1.0,
    "otel_attribute_format": "semconv",
}


def test_every_dbos_230_key_is_accepted() -> None:
    """A DBOS 2.30 config loads; keys that map set Spindle's, the rest are kept."""
    config = load_config(DBOS_230_CONFIG)
    assert config.system_database_url == "sqlite:///dbos-app.sqlite"  # None: the default
    assert config.notification_polling_interval_sec == 0.5
    assert (config.application_version, config.executor_id) == ("v1", "exec-1")
    assert config.dbos_settings["otel_attribute_format"] == "semconv"
    own = {f.name for f in dataclasses.fields(config)}
    assert set(DBOS_230_CONFIG) <= DBOS_KEYS | own
    assert all(reason for _check, _expected, reason in INERT.values())


def test_database_url_and_engine_map() -> None:
    """database_url (deprecated in DBOS) is the application database; a system database
    engine gives its URL."""
    engine = sa.create_engine("sqlite:///sys-from-engine.sqlite")
    try:
        config = load_config(
            {
                "name": "a",
                "database_url": "sqlite:///app.sqlite",
                "system_database_engine": engine,
            }
        )
    finally:
        engine.dispose()
    assert config.application_database_url == "sqlite:///app.sqlite"
    assert config.system_database_url == "sqlite:///sys-from-engine.sqlite"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("dbos_system_schema", "custom", "'dbos_system_schema'.*schema 'dbos'"),
        ("serializer", object(), "'serializer'.*Serializer"),
        ("otel_attribute_format", "fancy", "'otel_attribute_format'"),
        ("otlp_attributes", {"k": 1}, "'otlp_attributes'"),
        ("system_database_engine", "not an engine", "'system_database_engine'"),
    ],
)
def test_values_that_cannot_work_raise_naming_the_key(key: str, value: Any, expected: str) -> None:
    """Only a value Spindle cannot honour raises, with the key's name."""
    with pytest.raises(DBOSConfigError, match=expected):
        load_config({"name": "a", key: value})


def test_unknown_key_suggests_the_closest() -> None:
    """A typo gets a "did you mean" naming the real key, DBOS's or Spindle's."""
    with pytest.raises(DBOSConfigError, match="did you mean 'otlp_traces_endpoints'"):
        load_config({"name": "a", "otlp_trace_endpoints": []})
    with pytest.raises(DBOSConfigError, match="did you mean 'enable_otlp'"):
        load_config({"name": "a", "enable_otpl": True})
    with pytest.raises(DBOSConfigError, match="known keys"):
        load_config({"name": "a", "zzzzzz": 1})


def test_a_dbos_config_constructs_and_launches(make_dbos: MakeDBOS) -> None:
    """DBOS(config=...) with DBOS-only keys constructs and launches on both backends."""
    overrides = {k: v for k, v in DBOS_230_CONFIG.items() if k in INERT}
    make_dbos(**overrides).launch()
    assert DBOS.application_version == "0"


def test_error_texts_and_codes() -> None:
    """str() of each error is DBOS's: 'DBOS Error <code>: <message>'."""
    assert str(error.DBOSNonExistentWorkflowError("w1")) == (
        "DBOS Error 5: Non-existent target workflow ID: w1"
    )
    assert str(error.DBOSMaxStepRetriesExceeded("s", 3, [ValueError()])) == (
        "DBOS Error 7: Step s has exceeded its maximum of 3 retries"
    )
    assert str(error.DBOSConflictingRegistrationError("f")) == (
        "DBOS Error 25: Operation (Name: f) is already registered with a conflicting function type"
    )
    assert str(error.DBOSAwaitedWorkflowCancelledError("w")) == (
        "DBOS Error 13: Awaited workflow w was cancelled"
    )
    assert str(error.DBOSQueueDeduplicatedError("w", "q", "d")).endswith(
        "Workflow w was deduplicated due to an existing workflow in queue q with "
        "deduplication ID d."
    )
    assert "has exceeded its maximum of 2 execution or recovery attempts" in str(
        error.MaxRecoveryAttemptsExceededError("w", 2)
    )
    assert error.DBOSException("plain").message == "plain"
    assert str(error.DBOSException("plain")) == "DBOS Error: plain"
    assert error.DBOSNotAuthorizedError("no").status_code == 403
    assert issubclass(error.DBOSWorkflowCancelledError, BaseException)
    assert not issubclass(error.DBOSWorkflowCancelledError, Exception)
    assert not issubclass(error.DBOSWorkflowConflictIDError, Exception)
    assert error.DBOSErrorCode.ConflictingRegistrationError.value == 25


@pytest.mark.parametrize(
    "exc",
    [
        error.DBOSException("m", 3),
        error.DBOSNonExistentWorkflowError("`send` destination", "a, b"),
        error.DBOSConflictingWorkflowError("w", "why"),
        error.DBOSWorkflowConflictIDError("w"),
        error.DBOSRecoveryError("w", "why"),
        error.DBOSInitializationError("why"),
        error.DBOSWorkflowFunctionNotFoundError("w", "why"),
        error.DBOSWorkflowCancelledError("gone"),
        error.DBOSAwaitedWorkflowCancelledError("w"),
        error.DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded("w"),
        error.DBOSMaxStepRetriesExceeded("s", 2, [ValueError("x")]),
        error.DBOSMaxRecoveryAttemptsExceededError("w", 4),
        error.DBOSNotAuthorizedError("no"),
        error.DBOSConflictingRegistrationError("f"),
        error.DBOSUnexpectedStepError("w", 2, "a", "b"),
        error.DBOSQueueDeduplicatedError("w", "q", "d"),
        DBOSConfigError("k", "bad"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling(exc: BaseException) -> None:
    """A workflow's error is pickled into the database: it comes back as the same class
    with the same text."""
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
