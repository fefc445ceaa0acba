"""``DBOS``'s names for classes and roles: ``dbos_class``, ``register_instance``,
``required_roles``, ``default_required_roles``, ``set_authentication`` and the class
properties ``authenticated_user``, ``authenticated_roles`` and ``assumed_role``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from . import _classes, _roles

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class AuthProperties(type):
    """The current context's identity, as DBOS's class properties (None when unset)."""

    @property
    def authenticated_user(cls) -> str | None:
        """The user the current context runs as."""
        auth = _roles.current_auth.get()
        return auth.user if auth is not None else None

    @property
    def authenticated_roles(cls) -> list[str] | None:
        """The roles granted to the current context's user."""
        auth = _roles.current_auth.get()
        return list(auth.roles) if auth is not None and auth.roles is not None else None

    @property
    def assumed_role(cls) -> str | None:
        """The role the current function assumed (the first of its required roles the
        user has)."""
        auth = _roles.current_auth.get()
        return auth.assumed_role if auth is not None else None


class ClassesAndRolesAPI:
    """Classes and roles, as DBOS Transact 2.30 names them."""

    @classmethod
    def dbos_class(cls, class_name: str | None = None) -> Callable[[type[T]], type[T]]:
        """Register a class whose methods are workflows, steps or transactions (its name:
        ``class_name``, else its qualified name; unique per app)."""
        return lambda klass: _classes.dbos_class(klass, class_name)

    @classmethod
    def register_instance(cls, inst: object) -> None:
        """Register an object with a ``config_name`` so recovery finds it by class and
        config name (``DBOSConfiguredInstance`` does it on construction)."""
        _classes.register_instance(inst, launched=_classes.app_is_running())

    @classmethod
    def required_roles(cls, roles: list[str]) -> Callable[[F], F]:
        """The caller needs one of ``roles`` (``DBOSNotAuthorizedError`` otherwise); the
        first it has is assumed for the call and recorded on a workflow's status."""
        return _roles.required_roles(roles)

    @classmethod
    def default_required_roles(cls, roles: list[str]) -> Callable[[type[T]], type[T]]:
        """Roles every DBOS function of the class needs unless it sets its own."""
        return lambda klass: _roles.default_required_roles(klass, roles)

    @classmethod
    def set_authentication(
        cls, authenticated_user: str | None, authenticated_roles: list[str] | None
    ) -> None:
        """Set the current context's user and roles (workflows started after inherit them)."""
        _roles.set_authentication(authenticated_user, authenticated_roles)
