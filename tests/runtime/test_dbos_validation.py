"""``@DBOS.workflow(validate_args=...)`` with DBOS's ``pydantic_args_validator`` on both
backends: arguments are checked and coerced as the workflow starts running, after they
are read back from the database (so a DBOSClient's enqueue by name is validated too)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from spindle import (
    DBOS,
    DBOSClient,
    DBOSConfiguredInstance,
    Queue,
    make_pydantic_args_validator,
    pydantic_args_validator,
)

val_queue = Queue("validation-queue", polling_interval_sec=0.05)


class Order(BaseModel):
    item: str
    qty: int


@DBOS.workflow(validate_args=pydantic_args_validator)
def val_order(order: Order, rush: bool = False) -> str:
    assert isinstance(order, Order)  # a dict from a client became the model
    return f"{order.qty}x{order.item} rush={rush}"


@DBOS.workflow(validate_args=pydantic_args_validator)
async def val_async(count: int) -> int:
    return count + 1


def _upper(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return tuple(str(a).upper() for a in args), kwargs


@DBOS.workflow(validate_args=_upper)
def val_custom(word: str) -> str:
    return word


@DBOS.dbos_class()
class ValHolder(DBOSConfiguredInstance):
    @DBOS.workflow(validate_args=pydantic_args_validator)
    def doubled(self, n: int) -> str:
        return f"{self.config_name}:{n * 2}"


#: Registered at import, before any launch (as DBOS asks of configured instances).
HOLDER = ValHolder("h1")


def test_pydantic_validation_coerces_and_rejects(dbos: type[DBOS]) -> None:
    # Untyped views: these calls pass what the hints do not allow, on purpose.
    order: Any = val_order
    start: Any = DBOS.start_workflow
    assert order({"item": "tea", "qty": "2"}, rush="yes") == "2xtea rush=True"
    with pytest.raises(
        ValueError, match=r"Argument validation failed(?s:.*)'order' \(position 0\)"
    ):
        order({"item": "tea", "qty": "many"})
    with pytest.raises(ValueError, match="Missing required argument: 'order'"):
        order()
    failed = DBOS.list_workflows(name="val_order", status="ERROR")
    assert len(failed) == 2  # a rejected call is the workflow's error, recorded as such
    assert val_custom("abc") == "ABC"
    assert HOLDER.doubled("21") == "h1:42"  # type: ignore[arg-type]
    assert start(val_async, "41").get_result() == 42


def test_client_enqueue_is_validated_in_the_app(dbos: type[DBOS], db_url: str) -> None:
    client = DBOSClient(system_database_url=db_url, system_database_pool_size=2)
    try:
        options = {"workflow_name": "val_order", "queue_name": val_queue.name}
        ok = client.enqueue(options, {"item": "jam", "qty": 3})  # type: ignore[arg-type]
        assert ok.get_result() == "3xjam rush=False"
        bad = client.enqueue(options, {"item": "jam"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="qty"):
            bad.get_result()
    finally:
        client.destroy()


def test_marker_is_not_called_directly() -> None:
    with pytest.raises(NotImplementedError, match="make_pydantic_args_validator"):
        pydantic_args_validator((), {})
    validate = make_pydantic_args_validator(val_order)
    (order,), kwargs = validate(({"item": "x", "qty": 1},), {"rush": 0})
    assert order == Order(item="x", qty=1)
    assert kwargs == {"rush": False}
