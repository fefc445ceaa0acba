"""ThreadHistory (state over time) and /history: bounded, fed by a listener the app owns."""

from __future__ import annotations

from starlette.testclient import TestClient

from spindle.diagnostics import ThreadKind, ThreadRegistry, ThreadState
from spindle.web import ThreadHistory, create_app

from .conftest import Runtime


class FakeClock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_history_records_state_changes_from_registry_events(runtime: Runtime) -> None:
    """A thread's strip goes running → stopping → exited-ok as its events arrive."""
    history = ThreadHistory(runtime.registry)
    history.start()
    try:
        s = runtime.spawn(ThreadKind.POLLER, "dbos-cron[late]")
        s.stop.set()
        runtime.supervisor.reap(s, 5.0)
        _, strips = history.strips()
        strip = next(x for x in strips if x.record_id == s.record.record_id)
        states = [seg.state for seg in strip.segments]
        assert states[-1] is ThreadState.EXITED_OK
        assert ThreadState.RUNNING in states
        # Threads alive before start() were seeded with their current state.
        seeded = next(x for x in strips if x.name == "dbos-queue-manager")
        assert [seg.state for seg in seeded.segments] == [ThreadState.RUNNING]
    finally:
        history.stop()


def test_history_is_bounded_by_window_and_thread_count() -> None:
    """Exited threads older than the window are forgotten; at most max_threads are kept."""
    clock = FakeClock()
    registry = ThreadRegistry(clock=clock)
    history = ThreadHistory(registry, window_sec=60.0, max_threads=3)
    history.start()
    try:
        import threading

        for i in range(5):
            t = threading.Thread(name=f"t{i}")
            rec = registry.register_thread(t, kind=ThreadKind.FOREIGN, group=None)
            registry.mark_exited(rec)
            clock.now += 1
        _, strips = history.strips()
        assert [s.name for s in strips] == ["t2", "t3", "t4"]
        clock.now += 120
        assert history.strips()[1] == []
    finally:
        history.stop()


def test_app_lifespan_adds_and_removes_the_listener(runtime: Runtime) -> None:
    """The registry listeners (history, snapshot version) exist only while the app runs."""
    before = len(runtime.registry._listeners)
    app = create_app(runtime.session)
    with TestClient(app) as c:
        assert len(runtime.registry._listeners) == before + 2
        assert c.get("/history").status_code == 200
    assert len(runtime.registry._listeners) == before
    assert not app.state.dashboard.running
    assert not app.state.dashboard.history.running


def test_history_page_and_json(client: TestClient, runtime: Runtime) -> None:
    """/history draws one strip per thread; /history.json gives the segments."""
    html = client.get("/history").text
    assert '<svg id="history-svg"' in html
    # The eight supervised threads, each blocked in stop.wait: sampled as waiting.
    assert html.count('class="state state-waiting"') >= 8
    data = client.get("/history.json?kind=queue").json()
    assert {t["kind"] for t in data["threads"]} == {"queue"}
    assert len(data["threads"]) == 3
    assert data["threads"][0]["segments"][0]["state"] == "running"
    assert data["window_sec"] == 300.0


def test_history_has_waiting_segments_foreign_threads_and_fits_the_app_age(
    client: TestClient, runtime: Runtime
) -> None:
    """Sampled states: a thread in stop.wait has a waiting segment; threads the runtime did
    not make are there too; a young app's axis spans its age, not a five-minute window."""
    data = client.get("/history.json").json()
    by_name = {t["name"]: t for t in data["threads"]}
    deadlines = [s["state"] for s in by_name["dbos-deadlines"]["segments"]]
    assert "waiting" in deadlines
    assert any(t["kind"] == "foreign" for t in data["threads"])  # e.g. the test's own thread
    assert data["now_mono"] - data["window_start_mono"] < 60
