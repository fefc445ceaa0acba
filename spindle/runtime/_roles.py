"""DBOS's role-based security: ``@DBOS.required_roles``, ``@DBOS.default_required_roles``,
``DBOS.set_authentication``, ``DBOSContextSetAuth`` and the ``authenticated_user`` /
``authenticated_roles`` / ``assumed_role`` of the current context.

A workflow keeps the authentication it was started with, as in DBOS: the caller's user,
roles and assumed role are stored with the workflow's inputs (under :data:`AUTH_KEY`), so
recovery, a queue worker or a fork in any process runs the body, its steps and its
children with the same identity. Stored with the inputs, in the workflow's one creating
insert, it is never lost to a crash between two statements, and a workflow started without
authentication stores nothing more.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from ._errors import DBOSNotAuthorizedError
from ._functions import function_name

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: The keyword a workflow's stored inputs carry its authentication under.
AUTH_KEY = "__dbos_auth__"


@dataclass(frozen=True, slots=True)
class Auth:
    """An authenticated identity, as DBOS's context holds it."""

    user: str | None
    roles: tuple[str, ...] | None
    assumed_role: str | None = None


current_auth: contextvars.ContextVar[Auth | None] = contextvars.ContextVar(
    "spindle_auth", default=None
)


def _set(user: str | None, roles: Sequence[str] | None, assumed: str | None) -> Auth | None:
    if user is None and roles is None and assumed is None:
        return None
    return Auth(user, tuple(roles) if roles is not None else None, assumed)


def set_authentication(user: str | None, roles: Sequence[str] | None) -> None:
    """DBOS's ``set_authentication``: the user and roles of the current context."""
    now = current_auth.get()
    current_auth.set(_set(user, roles, now.assumed_role if now is not None else None))


class DBOSContextSetAuth:
    """Run the block as ``user`` with ``roles`` (restored on exit), as DBOS's class."""

    def __init__(self, user: str | None, roles: list[str] | None) -> None:
        self.user = user
        self.roles = roles
        self._token: contextvars.Token[Auth | None] | None = None

    def __enter__(self) -> Self:
        now = current_auth.get()
        self._token = current_auth.set(
            _set(self.user, self.roles, now.assumed_role if now is not None else None)
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        current_auth.reset(self._token)


def check_roles(name: str, required: Sequence[str]) -> str | None:
    """The first of ``required`` the caller has (the role it then assumes), or DBOS's
    ``DBOSNotAuthorizedError``; None when nothing is required."""
    if not required:
        return None
    auth = current_auth.get()
    if auth is None or auth.roles is None:
        raise DBOSNotAuthorizedError(
            f"Function {name} requires a role, but was called in a context without "
            "authentication information"
        )
    for role in required:
        if role in auth.roles:
            return role
    raise DBOSNotAuthorizedError(
        f"Function {name} has required roles, but user is not authenticated for any of them"
    )


class Assume:
    """Assume ``role`` for a block (no change when None)."""

    __slots__ = ("_role", "_token")

    def __init__(self, role: str | None) -> None:
        self._role = role
        self._token: contextvars.Token[Auth | None] | None = None

    def __enter__(self) -> None:
        if self._role is not None:
            now = current_auth.get() or Auth(None, None)
            self._token = current_auth.set(Auth(now.user, now.roles, self._role))

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            current_auth.reset(self._token)


def required_roles(roles: list[str]) -> Callable[[F], F]:
    """DBOS's ``@DBOS.required_roles``: the caller needs one of ``roles``; the first it has
    is the role it assumes for the call (recorded on a workflow's status)."""
    required = list(roles)

    def decorator(func: F) -> F:
        name = _registered_name(func)
        if _is_async(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with Assume(check_roles(name, required)):
                    return await func(*args, **kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                with Assume(check_roles(name, required)):
                    return func(*args, **kwargs)

            wrapper = sync_wrapper
        # A class's default roles do not apply to a function with its own.
        wrapper.__spindle_required_roles__ = required  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorator


def default_required_roles(cls: type[T], roles: list[str]) -> type[T]:
    """DBOS's ``@DBOS.default_required_roles``: every DBOS function of ``cls`` without its
    own ``required_roles`` needs one of ``roles``."""
    from ._classes import binding_of, dbos_class  # _classes imports nothing of this module

    if "__spindle_class_name__" not in vars(cls):
        dbos_class(cls, None)  # DBOS registers the class here too
    for attr, value in list(vars(cls).items()):
        kind = type(value) if isinstance(value, staticmethod | classmethod) else None
        func = value.__func__ if kind is not None else value
        if not callable(func) or binding_of(func) is None:
            continue  # not a workflow, step or transaction
        if hasattr(func, "__spindle_required_roles__"):
            continue  # its own roles win
        guarded: Any = required_roles(roles)(func)
        setattr(cls, attr, kind(guarded) if kind is not None else guarded)
    return cls


def guard(func: Callable[..., Any]) -> Assume:
    """For ``start_workflow``/``enqueue`` of a function with required roles: check them
    and assume the role while the workflow is created (so it records it)."""
    required = getattr(func, "__spindle_required_roles__", None)
    return Assume(check_roles(_registered_name(func), required) if required else None)


def _registered_name(func: Callable[..., Any]) -> str:
    info = getattr(func, "__spindle_workflow__", None)
    name = getattr(info, "name", None)
    return name if isinstance(name, str) else function_name(func)


def _is_async(func: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func)


def stored(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments a new workflow stores: with the caller's authentication."""
    auth = current_auth.get()
    if auth is None:
        return kwargs
    return {**kwargs, AUTH_KEY: auth}


def restoring(func: Callable[..., Any], *, is_async: bool) -> Callable[..., Any]:
    """A workflow's body that runs as the identity its inputs stored (DBOS restores it on
    recovery too); the user's function never sees :data:`AUTH_KEY`."""
    if is_async:

        @functools.wraps(func)
        async def async_body(*args: Any, **kwargs: Any) -> Any:
            token = current_auth.set(kwargs.pop(AUTH_KEY, None))
            try:
                return await func(*args, **kwargs)
            finally:
                current_auth.reset(token)

        return async_body

    @functools.wraps(func)
    def body(*args: Any, **kwargs: Any) -> Any:
        token = current_auth.set(kwargs.pop(AUTH_KEY, None))
        try:
            return func(*args, **kwargs)
        finally:
            current_auth.reset(token)

    return body


def split_auth(value: Any) -> tuple[Any, Auth | None]:
    """A stored ``(args, kwargs)`` without its authentication, and that authentication."""
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and isinstance(value[1], dict)
        and AUTH_KEY in value[1]
    ):
        kwargs = dict(value[1])
        auth = kwargs.pop(AUTH_KEY)
        return (value[0], kwargs), auth if isinstance(auth, Auth) else None
    return value, None
