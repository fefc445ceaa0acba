"""The pluggable serializer interface (DBOS's ``Serializer``) and its pickle default.

A serializer turns a Python value into a string for storage and back, and names its format so a
stored value can say which serializer wrote it: rows written before a change of serializer stay
readable after it.
"""

from __future__ import annotations

import base64
import enum
import pickle
from abc import ABC, abstractmethod
from typing import Any

__all__ = [
    "PICKLE_FORMAT",
    "PORTABLE_FORMAT",
    "DefaultSerializer",
    "Serializer",
    "WorkflowSerializationFormat",
]

PICKLE_FORMAT = "py_pickle"
"""The format name of Python's pickle, DBOS's default for Python applications."""

PORTABLE_FORMAT = "portable_json"
"""The format name of DBOS's portable JSON, which every DBOS SDK (and plain SQL) reads."""


# (str, Enum), not StrEnum: as DBOS's, str() of a member names the member, not its value.
class WorkflowSerializationFormat(str, enum.Enum):  # noqa: UP042
    """Which format a workflow's inputs, output and error (or one value) are written in.

    ``PORTABLE``: portable JSON, whatever the application's serializer; ``NATIVE``: Python's
    pickle; ``DEFAULT``: the application's serializer (DBOS spells its value ``"None"``).
    """

    PORTABLE = "portable"
    NATIVE = "native"
    DEFAULT = "None"


class Serializer(ABC):
    """Converts values to strings for the system database and back; ``name()`` labels the format."""

    @abstractmethod
    def serialize(self, data: Any) -> str:
        """Return ``data`` as a string this serializer's ``deserialize`` reads back."""

    @abstractmethod
    def deserialize(self, serialized_data: str) -> Any:
        """Return the value a string from ``serialize`` stands for."""

    @abstractmethod
    def name(self) -> str:
        """The format's name, recorded beside every value this serializer writes."""


class DefaultSerializer(Serializer):
    """Pickle, base64-encoded: any picklable Python value, readable only by Python."""

    def serialize(self, data: Any) -> str:
        """Pickle ``data`` at the highest protocol and base64-encode it."""
        return base64.b64encode(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)).decode(
            "ascii"
        )

    def deserialize(self, serialized_data: str) -> Any:
        """Decode and unpickle a string from :meth:`serialize`."""
        return pickle.loads(base64.b64decode(serialized_data))

    def name(self) -> str:
        """``py_pickle``, as DBOS names it."""
        return PICKLE_FORMAT
