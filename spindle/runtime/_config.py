"""Typed configuration with validation at construction: a bad key names itself."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ._config_dbos import DBOS_KEYS, translate
from ._config_dbos import suggest as suggest_key
from ._errors import DBOSConfigError


class DBOSConfig(TypedDict, total=False):
    """The configuration keys ``DBOS(config=...)`` accepts."""

    name: str
    system_database_url: str
    application_database_url: str | None
    executor_id: str
    application_version: str
    max_executor_threads: int
    enable_diagnostics: bool
    thread_join_timeout_sec: float
    run_admin_server: bool
    admin_port: int
    admin_host: str
    admin_token: str | None
    admin_healthz_public: bool
    otlp_traces_endpoints: list[str]
    shutdown_report_path: str | None
    sqlite_synchronous: str
    sys_db_pool_size: int
    notification_polling_interval_sec: float
    scheduler_polling_interval_sec: float
    diagnostics_max_exited_threads: int
    diagnostics_stuck_grace_sec: float
    diagnostics_fault: str | None
    log_level: str
    conductor_url: str | None
    conductor_key: str | None
    handle_signals: bool
    sys_db_client_retries: int
    # DBOS 2.30 keys without a Spindle key of their own (see _config_dbos).
    database_url: str | None
    sys_db_polling_concurrency: int | None
    db_engine_kwargs: dict[str, Any] | None
    otlp_log_level: str | None
    console_log_level: str | None
    otlp_logs_endpoints: list[str] | None
    otlp_attributes: dict[str, str] | None
    dbos_system_schema: str | None
    enable_otlp: bool
    system_database_engine: Any
    conductor_executor_metadata: dict[str, Any] | None
    serializer: Any
    enable_patching: bool
    use_listen_notify: bool
    run_migrations: bool
    notification_listener_polling_interval_sec: float
    notification_coalesce_sec: float | None
    kafka_queue_polling_interval_sec: float | None
    otel_attribute_format: str | None


#: Default bound of the executor. DBOS uses sys.maxsize to dodge parent/child deadlocks;
#: Spindle avoids those by running an unstarted child inline in the waiting parent's thread,
#: so the pool can stay bounded.
DEFAULT_MAX_EXECUTOR_THREADS = 64

#: Where DBOS apps connect when only ``conductor_key`` is given: DBOS's hosted conductor.
DEFAULT_CONDUCTOR_URL = "wss://cloud.dbos.dev/conductor/v1alpha1"

FAULTS = ("close_db_before_join", "ignore_stop_event", "spawn_after_shutdown")


@dataclass(frozen=True, slots=True)
class Config:
    """Validated configuration."""

    name: str
    system_database_url: str
    application_database_url: str | None = None
    executor_id: str = "local"
    application_version: str = "0"
    max_executor_threads: int = DEFAULT_MAX_EXECUTOR_THREADS
    enable_diagnostics: bool = False
    thread_join_timeout_sec: float = 10.0
    run_admin_server: bool = True
    admin_port: int = 3001
    admin_host: str = "127.0.0.1"
    admin_token: str | None = None
    #: GET /dbos-healthz answers without the token (for load-balancer probes).
    admin_healthz_public: bool = True
    otlp_traces_endpoints: tuple[str, ...] = field(default_factory=tuple)
    shutdown_report_path: str | None = None
    sqlite_synchronous: str = "FULL"
    sys_db_pool_size: int = 20
    notification_polling_interval_sec: float = 1.0
    scheduler_polling_interval_sec: float = 1.0
    diagnostics_max_exited_threads: int = 1000
    diagnostics_stuck_grace_sec: float = 5.0
    diagnostics_fault: str | None = None
    log_level: str = "INFO"
    conductor_url: str | None = None
    conductor_key: str | None = None
    #: Install a SIGTERM handler at launch() that runs the ordered shutdown (if the app has none).
    handle_signals: bool = True
    #: Retries of a transient system-database error a client call makes before it raises.
    sys_db_client_retries: int = 10
    #: The DBOS keys that change nothing here, as given (validated).
    dbos_settings: Mapping[str, Any] = field(default_factory=dict)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_port(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535


def _is_pos_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _is_opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_db_url(v: Any) -> bool:
    return isinstance(v, str) and re.match(r"^(sqlite|postgres(ql)?)(\+\w+)?://", v) is not None


def _is_opt_db_url(v: Any) -> bool:
    return v is None or _is_db_url(v)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(isinstance(x, str) for x in v)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (
        lambda v: isinstance(v, str) and re.fullmatch(r"[\w.-]+", v) is not None,
        "a non-empty name of letters, digits, '_', '.' or '-'",
    ),
    "system_database_url": (_is_db_url, "a sqlite:/// or postgresql:// URL"),
    "application_database_url": (_is_opt_db_url, "a sqlite:/// or postgresql:// URL, or None"),
    "executor_id": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "application_version": (_is_str, "a string"),
    "max_executor_threads": (_is_pos_int, "a positive integer"),
    "enable_diagnostics": (_is_bool, "True or False"),
    "thread_join_timeout_sec": (_is_pos_num, "a positive number of seconds"),
    "run_admin_server": (_is_bool, "True or False"),
    "admin_port": (_is_port, "a port number from 0 to 65535"),
    "admin_host": (lambda v: isinstance(v, str) and v != "", "a host name or address"),
    "admin_token": (
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "a non-empty string or None",
    ),
    "admin_healthz_public": (_is_bool, "True or False"),
    "otlp_traces_endpoints": (_is_str_list, "a list of URLs"),
    "shutdown_report_path": (_is_opt_str, "a file path or None"),
    "sqlite_synchronous": (
        lambda v: v in ("OFF", "NORMAL", "FULL", "EXTRA"),
        "one of OFF, NORMAL, FULL, EXTRA",
    ),
    "sys_db_pool_size": (_is_pos_int, "a positive integer"),
    "notification_polling_interval_sec": (_is_pos_num, "a positive number of seconds"),
    "scheduler_polling_interval_sec": (_is_pos_num, "a positive number of seconds"),
    "diagnostics_max_exited_threads": (
        lambda v: isinstance(v, int) and v >= 0,
        "a non-negative integer",
    ),
    "diagnostics_stuck_grace_sec": (_is_pos_num, "a positive number of seconds"),
    "diagnostics_fault": (lambda v: v is None or v in FAULTS, f"None or one of {FAULTS}"),
    "log_level": (
        lambda v: v in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        "a logging level name",
    ),
    "conductor_url": (
        lambda v: v is None or (isinstance(v, str) and re.match(r"^wss?://[^/\s]+", v) is not None),
        "a ws:// or wss:// URL, or None",
    ),
    "conductor_key": (
        lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[^/\s]+", v) is not None),
        "a non-empty key without '/' or spaces, or None",
    ),
    "handle_signals": (_is_bool, "True or False"),
    "sys_db_client_retries": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "a non-negative integer",
    ),
}


def load_config(raw: Mapping[str, Any], **overrides: Any) -> Config:
    """Validate a user's config mapping; raises :class:`DBOSConfigError` naming the bad key.

    ``overrides`` not None replace config keys (``DBOS(conductor_key=...)`` wins, as in DBOS).
    """
    if not isinstance(raw, Mapping):
        raise DBOSConfigError("config", "must be a mapping of config keys")
    if any(v is not None for v in overrides.values()):
        raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    for key in raw:
        if key not in _CHECKS and key not in DBOS_KEYS:
            raise DBOSConfigError(str(key), suggest_key(str(key), {*_CHECKS, *DBOS_KEYS}))
    raw, dbos_settings = translate(raw, own_keys=_CHECKS)
    if "name" not in raw:
        raise DBOSConfigError("name", "is required")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        check, expected = _CHECKS[key]
        if not check(value):
            raise DBOSConfigError(key, f"must be {expected}, got {value!r}")
        values[key] = tuple(value) if key == "otlp_traces_endpoints" else value
    if values.get("system_database_url") is None:
        values["system_database_url"] = default_sqlite_url(values["name"])
    if "executor_id" not in values and os.environ.get("DBOS__VMID"):
        values["executor_id"] = os.environ["DBOS__VMID"]
    _conductor_from_env(values)
    return Config(**values, dbos_settings=dbos_settings)


def default_sqlite_url(name: str) -> str:
    """The embedded default: a SQLite file named after the app, in the working directory."""
    return f"sqlite:///{name}.sqlite"


def _conductor_from_env(values: dict[str, Any]) -> None:
    """``DBOS__CONDUCTOR_URL``/``DBOS__CONDUCTOR_KEY`` fill what the config left unset,
    checked like config values (a bad one names the variable)."""
    for key, var in (
        ("conductor_url", "DBOS__CONDUCTOR_URL"),
        ("conductor_key", "DBOS__CONDUCTOR_KEY"),
    ):
        env = os.environ.get(var)
        if values.get(key) is None and env:
            check, expected = _CHECKS[key]
            if not check(env):
                raise DBOSConfigError(var, f"must be {expected}, got {env!r}")
            values[key] = env
