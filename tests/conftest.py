"""Shared fixtures: every database-touching test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from spindle import DBOS
from spindle.testing._threads import check_no_leaked_threads, thread_idents
from tests._requires import missing

PG_BASE = os.environ.get("SPINDLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
PG_HOWTO = (
    "PostgreSQL not reachable at {base} ({error}); start it with "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
    "or set SPINDLE_TEST_POSTGRES_URL"
)
_pg_error: list[str | None] = []


def _pg_admin() -> sa.Engine:
    return sa.create_engine(
        PG_BASE.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres",
        isolation_level="AUTOCOMMIT",
    )


def _postgres_error() -> str | None:
    if not _pg_error:
        engine = _pg_admin()
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _pg_error.append(None)
        except Exception as exc:
            _pg_error.append(f"{type(exc).__name__}")
        finally:
            engine.dispose()
    return _pg_error[0]


def require_postgres() -> None:
    """Skip (locally) or fail (under CI=true) when PostgreSQL is not reachable."""
    error = _postgres_error()
    if error is None:
        return
    missing(PG_HOWTO.format(base=PG_BASE, error=error))


def new_postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database URL, dropped afterwards."""
    require_postgres()
    name = f"spindle_test_{uuid.uuid4().hex[:12]}"
    yield f"{PG_BASE}/{name}"
    engine = _pg_admin()
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


#: Unit tests (in memory, no database, no subprocess) fail on a hang sooner than the default;
#: those marked ``slow`` keep pyproject's default (they take real time on a loaded machine).
UNIT_TIMEOUT_SEC = 30.0
UNIT_TEST_DIRS = ("diagnostics",)
_TESTS = Path(__file__).resolve().parent


def unit_timeout(path: Path, *, slow: bool) -> float | None:
    """The timeout a test at ``path`` gets instead of the default, or None for the default."""
    try:
        top = path.resolve().relative_to(_TESTS).parts[0]
    except ValueError:
        return None
    return UNIT_TIMEOUT_SEC if top in UNIT_TEST_DIRS and not slow else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give unit tests a shorter per-test timeout than pyproject's default."""
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        timeout = unit_timeout(item.path, slow=item.get_closest_marker("slow") is not None)
        if timeout is not None:
            item.add_marker(pytest.mark.timeout(timeout))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A system database URL on each backend (a new, empty database every test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'system.sqlite'}"
    else:
        yield from new_postgres_url()


@pytest.fixture
def app_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """An application database on the same backend as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'app.sqlite'}"
    else:
        yield from new_postgres_url()


MakeDBOS = Callable[..., type[DBOS]]


@pytest.fixture
def make_dbos(db_url: str) -> Iterator[MakeDBOS]:
    """Construct (not launch) DBOS on the test's database; destroyed after the test."""

    def make(clock: Any = None, **overrides: Any) -> type[DBOS]:
        config: dict[str, Any] = {
            "name": "spindle-test",
            "system_database_url": db_url,
            "run_admin_server": False,
            "thread_join_timeout_sec": 10.0,
        }
        config.update(overrides)
        DBOS(config=config, clock=clock)  # type: ignore[arg-type]
        return DBOS

    yield make
    DBOS.destroy()


@pytest.fixture
def dbos(make_dbos: MakeDBOS) -> type[DBOS]:
    """A launched DBOS with default test settings."""
    d = make_dbos()
    d.launch()
    return d


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test ends with no thread it started still alive."""
    before = thread_idents()
    yield
    check_no_leaked_threads(before)
