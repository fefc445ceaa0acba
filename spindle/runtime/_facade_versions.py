"""``DBOS``'s application-version names of DBOS 2.30 (list, latest, set latest, with their
``_async`` twins), as a base class of the facade delegating to ``_versions``."""

from __future__ import annotations

from . import _current, _versions
from ._versions import VersionInfo


class VersionAPI:
    """The application-version classmethods of ``DBOS``."""

    @classmethod
    def list_application_versions(cls) -> list[VersionInfo]:
        """Every version that launched on this system database, the latest first."""
        return _versions.list_versions(_current.get())

    @classmethod
    async def list_application_versions_async(cls) -> list[VersionInfo]:
        """Async :meth:`list_application_versions`."""
        return _versions.list_versions(_current.get())

    @classmethod
    def get_latest_application_version(cls) -> VersionInfo:
        """The latest version (raises when none is registered)."""
        return _versions.latest(_current.get())

    @classmethod
    async def get_latest_application_version_async(cls) -> VersionInfo:
        """Async :meth:`get_latest_application_version`."""
        return _versions.latest(_current.get())

    @classmethod
    def set_latest_application_version(
        cls, version_name: str, *, application_name: str | None = None
    ) -> None:
        """Make ``version_name`` the latest version (``application_name``: this app's only)."""
        rt = _current.get()
        if application_name is not None and application_name != rt.config.name:
            raise ValueError(
                f"application_name {application_name!r} is not this app ({rt.config.name!r})"
            )
        _versions.set_latest(rt, version_name)

    @classmethod
    async def set_latest_application_version_async(
        cls, version_name: str, *, application_name: str | None = None
    ) -> None:
        """Async :meth:`set_latest_application_version`."""
        cls.set_latest_application_version(version_name, application_name=application_name)
