"""Shutdown honours thread_join_timeout_sec: a stuck thread costs that long, not a constant."""

from __future__ import annotations

import time

from spindle import DBOS
from spindle.diagnostics import JoinOutcome
from tests.conftest import MakeDBOS

JOIN_TIMEOUT = 0.3
#: Slack for a loaded machine; far below the 10 s a hard-coded join timeout would take.
MARGIN = 3.0


def test_join_waits_the_configured_timeout_for_a_thread_ignoring_its_stop_event(
    make_dbos: MakeDBOS,
) -> None:
    """The stuck thread's join times out after thread_join_timeout_sec (within a margin),
    and the whole destroy() stays within a few of those timeouts."""
    make_dbos(diagnostics_fault="ignore_stop_event", thread_join_timeout_sec=JOIN_TIMEOUT).launch()
    start = time.monotonic()
    DBOS.destroy()
    elapsed = time.monotonic() - start
    record = next(
        t for t in DBOS.thread_registry.snapshot().threads if t.name == "dbos-fault-ignores-stop"
    )
    assert record.join_outcome is JoinOutcome.TIMEOUT
    assert record.join_duration is not None
    assert JOIN_TIMEOUT <= record.join_duration < JOIN_TIMEOUT + MARGIN
    # Every wait of the shutdown is bounded by the same setting: a handful of them at most.
    assert elapsed < 4 * JOIN_TIMEOUT + MARGIN
