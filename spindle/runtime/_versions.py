"""DBOS's application versions: every version that launched on the system database, and
which one is the latest (``DBOS.list_application_versions`` and its neighbours)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypedDict

import sqlalchemy as sa

from ._db_retry import retried
from ._errors import DBOSException
from ._rows import now_ms
from ._schema import application_versions as av

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._sysdb import SystemDatabase


class VersionInfo(TypedDict):
    """One application version (DBOS's ``VersionInfo``), times in epoch ms."""

    version_id: str
    version_name: str
    version_timestamp: int
    created_at: int
    application_name: str | None


_COLUMNS = (
    av.c.version_id,
    av.c.version_name,
    av.c.version_timestamp,
    av.c.created_at,
    av.c.application_name,
)


def _info(row: Any) -> VersionInfo:
    return VersionInfo(
        version_id=row[0],
        version_name=row[1],
        version_timestamp=int(row[2]),
        created_at=int(row[3]),
        application_name=row[4],
    )


def register(rt: Runtime) -> None:
    """Record this process's version at launch (a version seen before keeps its time)."""
    now = now_ms()
    stmt = (
        rt.sysdb.dialect_insert(av)
        .values(
            version_id=str(uuid.uuid4()),
            version_name=rt.config.application_version,
            version_timestamp=now,
            created_at=now,
            application_name=rt.config.name,
        )
        .on_conflict_do_nothing(index_elements=[av.c.version_name])
    )
    _insert(rt.sysdb, stmt)


@retried
def _insert(sysdb: SystemDatabase, stmt: Any) -> None:
    # Conflict-free on a replay: the version's row is there already.
    with sysdb.transaction() as conn:
        conn.execute(stmt)


def list_versions(rt: Runtime) -> list[VersionInfo]:
    """Every registered version, the latest first."""
    rt.require_launched()
    return list_in(rt.sysdb)


@retried
def list_in(sysdb: SystemDatabase) -> list[VersionInfo]:
    """:func:`list_versions` on a system database alone (``DBOSClient``)."""
    stmt = sa.select(*_COLUMNS).order_by(av.c.version_timestamp.desc(), av.c.version_name)
    with sysdb.transaction(read=True) as conn:
        return [_info(r) for r in conn.execute(stmt)]


def latest(rt: Runtime) -> VersionInfo:
    """The latest version (the greatest ``version_timestamp``)."""
    rt.require_launched()
    return latest_in(rt.sysdb)


def latest_in(sysdb: SystemDatabase) -> VersionInfo:
    """:func:`latest` on a system database alone (``DBOSClient``)."""
    versions = list_in(sysdb)
    if not versions:
        raise DBOSException("No application versions found")
    return versions[0]


def set_latest(rt: Runtime, version_name: str) -> None:
    """Make ``version_name`` the latest (registering it if it never launched)."""
    rt.require_launched()
    set_latest_in(rt.sysdb, version_name, rt.config.name)


@retried
def set_latest_in(sysdb: SystemDatabase, version_name: str, application_name: str | None) -> None:
    """:func:`set_latest` on a system database alone (``DBOSClient``)."""
    # A replay after an ambiguous commit stamps it latest again: the same outcome.
    now = now_ms()
    # Strictly after every other one, even within one millisecond of a launch.
    with sysdb.transaction() as conn:
        top = conn.execute(sa.select(sa.func.max(av.c.version_timestamp))).scalar()
        stamp = max(now, int(top or 0) + 1)
        updated = conn.execute(
            av.update().where(av.c.version_name == version_name).values(version_timestamp=stamp)
        ).rowcount
        if not updated:
            conn.execute(
                av.insert().values(
                    version_id=str(uuid.uuid4()),
                    version_name=version_name,
                    version_timestamp=stamp,
                    created_at=now,
                    application_name=application_name,
                )
            )
