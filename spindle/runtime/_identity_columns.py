"""DBOS's identity columns of ``workflow_status``: the class and config name of a method's
``self``/``cls`` and the user, assumed role and roles a workflow was started as.

They travel inside the stored inputs too (``_classes``' marker, ``_roles``' keyword), which
is what the runtime restores from; the columns repeat them so a listing that does not load
inputs (``load_input=False``, the admin API, the dashboard) still shows them. They are
written by the workflow's one creating insert: a workflow started with neither (most of
them) runs the same statement as before, with no column more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._classes import BoundTo
from ._roles import AUTH_KEY, Auth
from ._schema import IDENTITY_COLUMNS

__all__ = ["IDENTITY_COLUMNS", "identity_columns", "roles_of"]


def identity_columns(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The identity columns of a workflow stored as ``(args, kwargs)``, or None when it has
    no class binding and no authentication (then nothing more is written)."""
    bound = args[0] if args and isinstance(args[0], BoundTo) else None
    auth = kwargs.get(AUTH_KEY) if kwargs else None
    if bound is None and not isinstance(auth, Auth):
        return None
    roles = auth.roles if isinstance(auth, Auth) else None
    return {
        "class_name": bound.class_name if bound is not None else None,
        "config_name": bound.config_name if bound is not None else None,
        "authenticated_user": auth.user if isinstance(auth, Auth) else None,
        "assumed_role": auth.assumed_role if isinstance(auth, Auth) else None,
        "authenticated_roles": json.dumps(list(roles)) if roles is not None else None,
    }


def roles_of(column: str | None) -> list[str] | None:
    """The ``authenticated_roles`` column back as a list (None when unset or unreadable)."""
    if column is None:
        return None
    try:
        roles = json.loads(column)
    except ValueError:
        return None
    return [str(r) for r in roles] if isinstance(roles, list) else None
