"""DBOS's class-based workflows: ``@DBOS.dbos_class()``, ``DBOSConfiguredInstance`` and
``DBOS.register_instance``.

A method's first argument (``self`` or ``cls``) is never pickled with the workflow's inputs:
it is stored as a :class:`BoundTo` marker naming the class (and the instance's
``config_name``), and turned back into the registered class or instance when the workflow
body runs. So recovery, a queue worker, ``resume`` and ``fork`` in another process find the
same instance the way DBOS does, by class name and config name; and an instance holding a
lock or a connection needs not be picklable.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import FunctionType
from typing import Any, TypeVar

from . import _current
from ._errors import DBOSWorkflowFunctionNotFoundError

T = TypeVar("T")

_dbos_logger = logging.getLogger("dbos")

INSTANCE = "instance"
CLASS = "class"
STATIC = "static"

#: Registered classes by registered name, and configured instances by "<class>/<config>".
CLASSES: dict[str, type] = {}
INSTANCES: dict[str, object] = {}


@dataclass(frozen=True, slots=True)
class BoundTo:
    """What is stored in place of a method's ``self``/``cls``: DBOS's class and config name."""

    class_name: str
    config_name: str | None

    @property
    def key(self) -> str:
        return f"{self.class_name}/{self.config_name}" if self.config_name else self.class_name


class Binding:
    """Per decorated function: how its first argument binds (set by ``@DBOS.dbos_class``)."""

    __slots__ = ("kind", "self_named")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.kind: str | None = None
        try:
            params = list(inspect.signature(func).parameters)
        except (TypeError, ValueError):  # a builtin or other signature-less callable
            params = []
        # DBOS's guard against a method of a class that was never decorated.
        self.self_named = bool(params) and params[0] == "self"

    def encode(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """``args`` with the first one replaced by its marker (the call's stored form)."""
        kind = self.kind
        if kind is None or kind == STATIC or not args:
            if kind is None and args and (self.self_named or isinstance(args[0], type)):
                what = "a class" if isinstance(args[0], type) else "a class instance"
                raise Exception(  # DBOS raises a plain Exception with this text
                    f"Function target appears to be {what}, but is not properly registered"
                )
            return args
        first = args[0]
        if isinstance(first, BoundTo):
            return args  # already stored form (a recovered call)
        if kind == CLASS:
            return (BoundTo(registered_name(first), None), *args[1:])
        config_name = getattr(first, "config_name", None)
        if config_name is None:
            raise Exception(
                "Function target appears to be a class instance, but does not have "
                "`config_name` set"
            )
        return (BoundTo(registered_name(type(first)), str(config_name)), *args[1:])


def binding_of(func: Callable[..., Any]) -> Binding | None:
    """The binding a decorator attached to ``func`` (or to the function it wraps)."""
    while func is not None:
        found = getattr(func, "__spindle_binding__", None)
        if isinstance(found, Binding):
            return found
        func = getattr(func, "__wrapped__", None)  # type: ignore[assignment]
    return None


def attach(wrapper: Callable[..., Any], func: Callable[..., Any]) -> None:
    """Give a decorator's wrapper its binding (unbound until its class is decorated)."""
    wrapper.__spindle_binding__ = Binding(func)  # type: ignore[attr-defined]


def call_args(func: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The stored form of ``func(*args)``, for ``start_workflow(inst.method, ...)`` and
    queues: a bound method contributes its ``__self__`` as the first argument."""
    binding = binding_of(func)
    owner = getattr(func, "__self__", None)
    if owner is not None:
        args = (owner, *args)
    return binding.encode(args) if binding is not None else args


def resolve(marker: BoundTo) -> object | None:
    """The registered instance or class a marker names (None when not registered)."""
    if marker.config_name is not None:
        return INSTANCES.get(marker.key)
    return CLASSES.get(marker.class_name)


def check_resolvable(workflow_id: str, args: tuple[Any, ...] | list[Any]) -> None:
    """Raise DBOS's not-found error before running a stored call whose instance or class
    this process has not registered (the workflow stays PENDING, as in DBOS)."""
    if args and isinstance(args[0], BoundTo) and resolve(args[0]) is None:
        marker = args[0]
        what = (
            f"configured class instance '{marker.key}'"
            if marker.config_name is not None
            else f"class '{marker.class_name}'"
        )
        raise DBOSWorkflowFunctionNotFoundError(workflow_id, f"{what} is not registered")


def _decode(args: tuple[Any, ...]) -> tuple[Any, ...]:
    if args and type(args[0]) is BoundTo:
        target = resolve(args[0])
        if target is None:
            check_resolvable("<unknown>", args)
        return (target, *args[1:])
    return args


def decoding(func: Callable[..., Any], *, is_async: bool) -> Callable[..., Any]:
    """The body a workflow registers: ``func`` with a stored first argument resolved."""
    if is_async:

        @functools.wraps(func)
        async def async_body(*args: Any, **kwargs: Any) -> Any:
            return await func(*_decode(args), **kwargs)

        return async_body

    @functools.wraps(func)
    def body(*args: Any, **kwargs: Any) -> Any:
        return func(*_decode(args), **kwargs)

    return body


def registered_name(cls: type) -> str:
    """A class's DBOS name: the ``class_name`` given to ``dbos_class``, else its qualname."""
    return str(cls.__dict__.get("__spindle_class_name__", cls.__qualname__))


def dbos_class(cls: type[T], class_name: str | None) -> type[T]:
    """Register ``cls`` and tell its decorated methods what their first argument is."""
    name = class_name if class_name is not None else cls.__qualname__
    known = CLASSES.get(name)
    if known is not None and known is not cls:
        raise Exception(f"Duplicate type registration for class '{name}'")
    cls.__spindle_class_name__ = name  # type: ignore[attr-defined]
    CLASSES[name] = cls
    for attribute in list(vars(cls).values()):
        if isinstance(attribute, staticmethod):
            kind, func = STATIC, attribute.__func__
        elif isinstance(attribute, classmethod):
            kind, func = CLASS, attribute.__func__
        elif isinstance(attribute, FunctionType):
            kind, func = INSTANCE, attribute
        else:
            continue
        binding = binding_of(func)
        if binding is not None:
            binding.kind = kind
    return cls


def app_is_running() -> bool:
    """True between the current app's launch and its destroy."""
    rt = _current.peek()
    return rt is not None and rt.launched and not rt.destroyed


def register_instance(inst: object, *, launched: bool) -> None:
    """DBOS's ``register_instance``: recovery finds ``inst`` by class and config name."""
    config_name = getattr(inst, "config_name", None)
    if config_name is None:
        raise Exception("register_instance needs an object with a `config_name`")
    class_name = registered_name(type(inst))
    if launched:
        _dbos_logger.warning(
            "Configured instance %s of class %s was registered after DBOS was launched. This "
            "may cause errors during workflow recovery. All configured instances should be "
            "instantiated before DBOS is launched.",
            config_name,
            class_name,
        )
    key = f"{class_name}/{config_name}"
    known = INSTANCES.get(key)
    if known is not None and known is not inst:
        raise Exception(
            f"Duplicate instance registration for class '{class_name}' instance '{config_name}'"
        )
    INSTANCES[key] = inst


def split_input(value: Any) -> tuple[Any, str | None, str | None]:
    """A stored ``(args, kwargs)`` without its marker, and the class and config names
    (DBOS's ``WorkflowStatus.input`` has no ``self``; ``class_name``/``config_name`` say it)."""
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and isinstance(value[0], tuple | list)
        and value[0]
        and isinstance(value[0][0], BoundTo)
    ):
        marker = value[0][0]
        return (tuple(value[0][1:]), value[1]), marker.class_name, marker.config_name
    return value, None, None


class DBOSConfiguredInstance:
    """Base of a class whose instances carry workflows: ``config_name`` names the instance
    (unique per class), and the instance registers itself for recovery (DBOS)."""

    def __init__(self, config_name: str) -> None:
        self.config_name = config_name
        register_instance(self, launched=app_is_running())
