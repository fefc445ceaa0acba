"""``@DBOS.workflow(validate_args=...)``: check (and coerce) a workflow's arguments as it
starts running, after they are read back from the database (so on recovery, on a queue
worker and for a ``DBOSClient`` enqueue too), as DBOS does.

``pydantic_args_validator`` is DBOS's marker for "validate against the type hints with
pydantic"; the decorator swaps it for :func:`make_pydantic_args_validator` of the function.
pydantic is imported only then, so Spindle does not need it otherwise.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

#: DBOS's ``ValidateArgsCallable``: ``(args, kwargs) -> (args, kwargs)``.
ValidateArgs = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]

# A method's first parameter (the instance or class) is not one of the workflow's inputs.
_BOUND_FIRST = ("self", "cls")


def pydantic_args_validator(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Pass as ``@DBOS.workflow(validate_args=pydantic_args_validator)``: the arguments are
    validated against the function's type hints with pydantic. Never called itself."""
    raise NotImplementedError(
        "pydantic_args_validator should not be called directly. "
        "Use make_pydantic_args_validator(func) to create a validator for a specific function."
    )


def _parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    params = list(inspect.signature(func).parameters.values())
    if params and params[0].name in _BOUND_FIRST:
        params = params[1:]
    return [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: the raw annotations
        return dict(getattr(func, "__annotations__", {}))


def make_pydantic_args_validator(func: Callable[..., Any]) -> ValidateArgs:
    """A ``validate_args`` callable that validates (and coerces) each argument of ``func``
    against its type hint with pydantic 2's ``TypeAdapter``; every failure is reported in
    one ``ValueError``. Needs pydantic (an optional dependency)."""
    try:
        from pydantic import TypeAdapter, ValidationError
    except ImportError as exc:  # pragma: no cover - pydantic is installed in the dev env
        raise ImportError(
            "pydantic is required for pydantic_args_validator. "
            "Install it with: pip install pydantic"
        ) from exc
    # Built on the first call: a hint may name a class defined after the decorator runs.
    built: list[tuple[str, Any, Any]] = []

    def adapters() -> list[tuple[str, Any, Any]]:
        if not built:
            hints = _hints(func)
            for p in _parameters(func):
                hint = hints.get(p.name)
                built.append((p.name, None if hint is None else TypeAdapter(hint), p.default))
        return built

    def validate(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        table = adapters()
        by_name = {name: adapter for name, adapter, _ in table}
        errors: list[str] = []
        out_args = list(args)
        for i, value in enumerate(args[: len(table)]):
            name, adapter, _ = table[i]
            if adapter is not None:
                try:
                    out_args[i] = adapter.validate_python(value)
                except ValidationError as exc:
                    errors.append(f"Argument '{name}' (position {i}): {exc}")
        out_kwargs = dict(kwargs)
        for key, value in kwargs.items():
            kw_adapter = by_name.get(key)
            if kw_adapter is not None:
                try:
                    out_kwargs[key] = kw_adapter.validate_python(value)
                except ValidationError as exc:
                    errors.append(f"Argument '{key}': {exc}")
        given = {name for name, _, _ in table[: len(args)]} | set(kwargs)
        errors.extend(
            f"Missing required argument: '{name}'"
            for name, _, default in table
            if name not in given and default is inspect.Parameter.empty
        )
        if errors:
            raise ValueError("Argument validation failed for workflow:\n" + "\n".join(errors))
        return tuple(out_args), out_kwargs

    return validate


def resolve(func: Callable[..., Any], validate_args: ValidateArgs | None) -> ValidateArgs | None:
    """The validator a decorator applies: the marker becomes pydantic's for ``func``."""
    if validate_args is pydantic_args_validator:
        return make_pydantic_args_validator(func)
    return validate_args


def validating(
    func: Callable[..., Any], validate: ValidateArgs, *, is_async: bool
) -> Callable[..., Any]:
    """``func`` whose arguments go through ``validate`` first (a method's instance or class,
    the first argument, is passed through untouched)."""
    params = list(inspect.signature(func).parameters)
    skip = 1 if params and params[0] in _BOUND_FIRST else 0

    def checked(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        new_args, new_kwargs = validate(tuple(args[skip:]), dict(kwargs))
        return tuple(args[:skip]) + tuple(new_args), new_kwargs

    if is_async:

        @functools.wraps(func)
        async def async_body(*args: Any, **kwargs: Any) -> Any:
            call_args, call_kwargs = checked(args, kwargs)
            return await func(*call_args, **call_kwargs)

        return async_body

    @functools.wraps(func)
    def body(*args: Any, **kwargs: Any) -> Any:
        call_args, call_kwargs = checked(args, kwargs)
        return func(*call_args, **call_kwargs)

    return body
