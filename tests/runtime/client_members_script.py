"""A process with no workflow code: drives the app of ``test_dbos_client_members.py``
through the DBOSClient members DBOS 2.30 added (bulk management, delays, attributes,
versions, bulk and in-transaction writes, schedule backfill/trigger) and prints what it
saw as one JSON line. Run as ``python -m tests.runtime.client_members_script <URL>``."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from spindle import DBOSClient, EnqueueOptions, SendMessage
from spindle.runtime._sysdb_engine import normalize_url

QUEUE = "clientm-queue"


def _error(call: Any) -> str:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return "no error"


def main(url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"threads_before": threading.active_count()}
    client = DBOSClient(system_database_url=url, application_name="clientm-app")
    engine = sa.create_engine(normalize_url(url))
    try:
        client.check_connection()
        asyncio.run(client.check_connection_async())
        add: EnqueueOptions = {"queue_name": QUEUE, "workflow_name": "clientm_add"}

        # Bulk cancel and resume: two delayed workflows, cancelled, then resumed.
        later = [
            client.enqueue({**add, "workflow_id": f"m-later-{i}", "delay_seconds": 600}, i, i)
            for i in (1, 2)
        ]
        client.cancel_workflows([h.workflow_id for h in later])
        seen["cancelled"] = [h.get_status().status for h in later]
        resumed = client.resume_workflows([h.workflow_id for h in later])
        seen["resumed"] = [h.get_result() for h in resumed]

        # A delayed workflow brought forward.
        delayed = client.enqueue({**add, "workflow_id": "m-delayed", "delay_seconds": 600}, 5, 5)
        seen["delayed"] = delayed.get_status().status
        asyncio.run(client.set_workflow_delay_async("m-delayed", delay_seconds=0))
        seen["undelayed"] = delayed.get_result()

        # Attributes, then delete.
        client.update_workflow_attributes("m-delayed", {"team": "ops"})
        seen["attributes"] = client.list_workflows(workflow_ids=["m-delayed"])[0].attributes
        seen["attributes_missing"] = _error(
            lambda: client.update_workflow_attributes("m-nope", {"a": 1})
        )
        client.delete_workflow("m-delayed")
        seen["deleted"] = _error(lambda: client.retrieve_workflow("m-delayed"))
        asyncio.run(client.delete_workflows_async([h.workflow_id for h in later]))
        seen["deleted_bulk"] = client.list_workflows(workflow_ids=[h.workflow_id for h in later])

        # Versions.
        seen["versions"] = [v["version_name"] for v in client.list_application_versions()]
        client.set_latest_application_version("v-promoted")
        seen["latest"] = client.get_latest_application_version()["version_name"]
        seen["latest_async"] = asyncio.run(client.get_latest_application_version_async())[
            "version_name"
        ]

        # Messages: bulk, then in the caller's transaction (rolled back, then committed).
        inbox = client.enqueue({"queue_name": QUEUE, "workflow_name": "clientm_inbox"}, 4)
        client.send_bulk([SendMessage(inbox.workflow_id, i, "t") for i in ("a", "b")])
        with engine.connect() as conn:
            trans = conn.begin()
            client.send_in_transaction(conn, inbox.workflow_id, "rolled-back", "t")
            trans.rollback()
        with engine.begin() as conn:
            client.send_bulk_in_transaction(conn, [SendMessage(inbox.workflow_id, "c", "t")])
            client.send_in_transaction(conn, inbox.workflow_id, "d", "t")
        seen["inbox"] = inbox.get_result()
        seen["send_missing"] = _error(lambda: client.send_bulk([SendMessage("m-nope", 1)]))
        seen["send_keyed"] = _error(lambda: client.send_bulk([SendMessage("x", 1, None, "k")]))

        # Enqueue in the caller's transaction: nothing after a rollback, a run after a commit.
        with engine.connect() as conn:
            trans = conn.begin()
            client.enqueue_in_transaction(conn, {**add, "workflow_id": "m-txn-rb"}, 1, 1)
            trans.rollback()
        seen["txn_rolled_back"] = client.list_workflows(workflow_ids=["m-txn-rb"])
        with engine.begin() as conn:
            handle = client.enqueue_in_transaction(conn, {**add, "workflow_id": "m-txn"}, 7, 7)
            # A held deduplication ID raises and leaves the transaction usable.
            dedup: EnqueueOptions = {**add, "deduplication_id": "d-1", "delay_seconds": 600}
            client.enqueue_in_transaction(conn, {**dedup, "workflow_id": "m-dedup-1"}, 0, 0)
            seen["txn_dedup"] = _error(
                lambda: client.enqueue_in_transaction(conn, {**dedup, "workflow_id": "m-d2"}, 0, 0)
            )
        seen["txn"] = handle.get_result()
        client.cancel_workflow("m-dedup-1")

        # A schedule's ticks, enqueued for the app on DBOS's internal queue.
        client.create_schedule(
            schedule_name="m-yearly", workflow_name="clientm_tick", schedule="0 0 1 1 *"
        )
        start, end = datetime(2020, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, 0, 0, 1, tzinfo=UTC)
        ticks = client.backfill_schedule("m-yearly", start, end)
        seen["backfill"] = [h.get_result() for h in ticks]
        again = client.backfill_schedule("m-yearly", start, end)
        seen["backfill_again"] = [h.workflow_id for h in again] == [h.workflow_id for h in ticks]
        seen["trigger"] = client.trigger_schedule("m-yearly").get_result() is not None
        seen["backfill_missing"] = _error(lambda: client.trigger_schedule("m-nope"))

        # What a client cannot do here says so.
        seen["refused"] = [
            _error(lambda: client.list_queues()),
            _error(lambda: client.retrieve_queue(QUEUE)),
            _error(lambda: client.register_queue("x")),
            _error(lambda: client.delete_queue(QUEUE)),
            _error(lambda: client.rename_application("a", "b")),
        ]
        seen["threads_during"] = threading.active_count()
    finally:
        engine.dispose()
        client.destroy()
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), default=str), flush=True)
