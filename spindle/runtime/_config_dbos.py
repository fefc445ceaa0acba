"""The keys of DBOS Transact 2.30's ``DBOSConfig`` that are not Spindle's own.

Each is accepted, validated and either mapped onto a Spindle key (``RENAMES`` and
``translate``) or kept as given with a reason it changes nothing here (``INERT``). Only a
value that cannot work in Spindle raises. ``suggest`` names the closest known key for a typo.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from ._errors import DBOSConfigError
from ._serialization import check_serializer

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _opt_int(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool))


def _opt_pos_num(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v > 0)


def _opt_level(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.upper() in _LEVELS)


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _opt_str_list(v: Any) -> bool:
    return v is None or (isinstance(v, list | tuple) and all(isinstance(x, str) for x in v))


def _opt_dict(v: Any) -> bool:
    return v is None or isinstance(v, dict)


def _opt_str_dict(v: Any) -> bool:
    return v is None or (
        isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
    )


#: DBOS key -> (check, expected, how Spindle uses it or why it changes nothing here). The
#: value is validated and kept in ``Config.dbos_settings``.
INERT: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "sys_db_polling_concurrency": (
        _opt_int,
        "an integer or None",
        "waiters are woken by the notification listener, not by polling reads",
    ),
    "db_engine_kwargs": (
        _opt_dict,
        "a dict of create_engine arguments or None",
        "Spindle sizes its own engines (sys_db_pool_size) and keeps hot-path connections",
    ),
    "otlp_log_level": (
        _opt_level,
        "a logging level name or None",
        "used: the level of the OTLP log export (log_level when None)",
    ),
    "console_log_level": (
        _opt_level,
        "a logging level name or None",
        "Spindle adds no console handler: the app's logging config applies to 'dbos'",
    ),
    "otlp_logs_endpoints": (
        _opt_str_list,
        "a list of URLs or None",
        "used: with enable_otlp, the 'dbos' logger's records go there over OTLP/HTTP",
    ),
    "otlp_attributes": (
        _opt_str_dict,
        "a dict of str to str or None",
        "used: set on every workflow, step and transaction span (diagnostics on)",
    ),
    "enable_otlp": (
        _bool,
        "True or False",
        "used: turns on the OTLP log export; spans are exported with enable_diagnostics",
    ),
    "conductor_executor_metadata": (
        _opt_dict,
        "a JSON-serializable dict or None",
        "used: sent in the conductor client's executor_info, with Spindle's own fields",
    ),
    "enable_patching": (_bool, "True or False", "used: DBOS.patch/deprecate_patch need it True"),
    "use_listen_notify": (
        _bool,
        "True or False",
        "PostgreSQL always uses LISTEN/NOTIFY, SQLite always polls",
    ),
    "run_migrations": (
        _bool,
        "True or False",
        "launch always brings the schema forward (migrations are idempotent)",
    ),
    "notification_coalesce_sec": (
        _opt_pos_num,
        "a positive number of seconds or None",
        "each commit notifies at once",
    ),
    "kafka_queue_polling_interval_sec": (
        _opt_pos_num,
        "a positive number of seconds or None",
        "Kafka messages start workflows directly, not through an internal queue",
    ),
    "otel_attribute_format": (
        lambda v: v is None or v in ("legacy", "semconv"),
        "'legacy', 'semconv' or None",
        "used: the attribute names of workflow, step and transaction spans",
    ),
}

#: DBOS key -> the Spindle key it sets (when that key is not given itself).
RENAMES: dict[str, str] = {
    "database_url": "application_database_url",
    "notification_listener_polling_interval_sec": "notification_polling_interval_sec",
}

#: Keys whose value is checked for the values Spindle can honour.
ONLY: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dbos_system_schema": (
        lambda v: v is None or v == "dbos",
        "'dbos' or None: Spindle's tables live in the schema 'dbos'",
    ),
    "serializer": (
        check_serializer,
        "a Serializer (e.g. DBOSPortableJSONSerializer()) or None",
    ),
    "system_database_engine": (
        lambda v: v is None or _engine_url(v) is not None,
        "a SQLAlchemy Engine on SQLite or PostgreSQL, or None",
    ),
}

DBOS_KEYS = frozenset(INERT) | frozenset(RENAMES) | frozenset(ONLY)

#: Keys DBOS types ``Optional``: None there means "the default", as in DBOS (a config
#: often reads ``os.environ.get(...)``).
NONE_IS_DEFAULT = frozenset(
    {
        "system_database_url",
        "application_database_url",
        "sys_db_pool_size",
        "log_level",
        "otlp_traces_endpoints",
        "admin_port",
        "run_admin_server",
        "application_version",
        "executor_id",
        "max_executor_threads",
        "scheduler_polling_interval_sec",
    }
)


def _engine_url(engine: Any) -> str | None:
    url = getattr(engine, "url", None)
    render = getattr(url, "render_as_string", None)
    if render is None:
        return None
    text = render(hide_password=False)
    return (
        text
        if isinstance(text, str)
        and text.split(":", 1)[0].split("+")[0]
        in (
            "sqlite",
            "postgresql",
            "postgres",
        )
        else None
    )


def translate(
    raw: Mapping[str, Any], *, own_keys: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a user's config into Spindle keys and validated DBOS-only settings.

    A key in ``own_keys`` is Spindle's (it wins over this module's table). DBOS keys that map
    are renamed (a Spindle key given as well wins); a system database engine gives its URL.
    Raises :class:`DBOSConfigError` naming the key for a bad value.
    """
    own: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key in NONE_IS_DEFAULT and value is None:
            continue
        if key in own_keys:
            own[key] = value
        elif key in INERT:
            check, expected, _why = INERT[key]
            if not check(value):
                raise DBOSConfigError(key, f"must be {expected}, got {value!r}")
            settings[key] = value
        elif key in ONLY:
            check, expected = ONLY[key]
            if not check(value):
                raise DBOSConfigError(key, f"must be {expected}, got {value!r}")
            settings[key] = value
        elif key not in RENAMES:
            own[key] = value
    for dbos_key, key in RENAMES.items():
        if dbos_key in raw and raw[dbos_key] is not None and key not in own:
            own[key] = raw[dbos_key]
    engine = raw.get("system_database_engine")
    if engine is not None and own.get("system_database_url") is None:
        own["system_database_url"] = _engine_url(engine)
    return own, settings


def suggest(key: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest known key, or a list of them."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; known keys: {sorted(known)}"
