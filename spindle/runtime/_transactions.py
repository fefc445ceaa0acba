"""Running ``@DBOS.transaction`` functions: the transactional operation on the app database.

A transaction's checkpoint lives in the application database, committed in the same
transaction as its work, so its replay reads that table instead of the workflow's steps
(and only when the workflow is being replayed: a new workflow never reads to look). The
protocol itself, shared with the datasources, is :mod:`._tx_op`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ._durable import Call, Host, drive
from ._errors import DBOSException
from ._tx_op import transactional

if TYPE_CHECKING:
    from ._appdb import ApplicationDatabase
    from ._functions import TransactionInfo


class TransactionHost(Host, Protocol):
    """What transactions read of the runtime, beyond the protocol's needs."""

    @property
    def appdb(self) -> ApplicationDatabase | None: ...


def run_transaction(
    rt: TransactionHost, info: TransactionInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run a sync transaction, exactly once per workflow across replays."""
    appdb = rt.appdb
    if appdb is None:
        raise DBOSException("@DBOS.transaction needs application_database_url in the config")
    call = Call(info.func, args, kwargs)
    return drive(transactional(rt, appdb, info.name, call, info.isolation_level))
