"""Reading other threads' frames without CPython 3.11's deadlock (gh-106883): the call
holds the thread-list lock while it allocates, and a collection started there may free a
``threading.local``, whose deallocation takes the same lock, with the GIL held."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from spindle.diagnostics._stacks import current_frames

ROOT = Path(__file__).resolve().parents[2]

# Threads keep making threading.local objects in reference cycles (garbage only the
# collector frees), while the main thread reads frames with a collection due at every
# allocation. Unguarded, this froze the process in one run of five here.
STRESS = textwrap.dedent(
    """
    import gc, sys, threading
    from spindle.diagnostics._stacks import current_frames

    stop = threading.Event()

    def churn():
        while not stop.is_set():
            local = threading.local()
            local.cycle = local

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    gc.set_threshold(1)
    for _ in range(20000):
        assert threading.main_thread().ident in current_frames()
    stop.set()
    for t in threads:
        t.join()
    print("read", flush=True)
    """
)


def test_reading_frames_while_thread_locals_are_collected_does_not_freeze() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STRESS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "read"


def test_the_collector_is_left_as_the_application_set_it() -> None:
    assert gc.isenabled()
    frames = current_frames()
    assert threading.get_ident() in frames
    assert gc.isenabled()
    gc.disable()
    try:
        current_frames()
        assert not gc.isenabled(), "an application that turned the collector off keeps it off"
    finally:
        gc.enable()
