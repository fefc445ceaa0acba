"""``DBOS.patch`` / ``deprecate_patch`` and their ``_async`` twins (see :mod:`._patching`)."""

from __future__ import annotations

from . import _current, _patching


class PatchAPI:
    """DBOS Transact 2.30's patching names (need ``enable_patching: True``)."""

    @classmethod
    def patch(cls, patch_name: str) -> bool:
        """In a workflow: True when this execution runs the patched code (a new execution,
        or a replay of one that did); False for a replay of history from before it."""
        return _patching.patch(_current.get(), patch_name)

    @classmethod
    async def patch_async(cls, patch_name: str) -> bool:
        """Async :meth:`patch` (one short write, on the loop: no other task can take a
        position of this workflow in between)."""
        return _patching.patch(_current.get(), patch_name, "patch_async")

    @classmethod
    def deprecate_patch(cls, patch_name: str) -> bool:
        """In a workflow: True, stepping over the patch's marker in histories that have it
        (the release after a patch, before its ``if`` is removed)."""
        return _patching.deprecate_patch(_current.get(), patch_name)

    @classmethod
    async def deprecate_patch_async(cls, patch_name: str) -> bool:
        """Async :meth:`deprecate_patch`."""
        return _patching.deprecate_patch(_current.get(), patch_name, "deprecate_patch_async")
