"""Fixtures for the dashboard tests: live supervised threads, recorded shutdowns, a server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from spindle.diagnostics import (
    SHUTDOWN_PHASES,
    DiagnosticsSession,
    EventType,
    ShutdownRecorder,
    ShutdownTimeline,
    StopEvent,
    ThreadGroup,
    ThreadKind,
    ThreadRegistry,
)
from spindle.diagnostics import _phases as specs
from spindle.runtime._supervisor import Supervised, Supervisor
from spindle.testing._threads import check_no_leaked_threads, thread_idents
from spindle.web import _views, create_app
from tests._requires import require_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


#: Sources of threads a test may leave behind because a session fixture owns them.
_TOLERATED: list[Callable[[], set[int]]] = []


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread it started alive.

    Session-scoped fixtures (the Playwright driver's ``asyncio-waitpid`` thread) are set up
    before this function-scoped fixture, so their threads are in ``before``. The one other
    exception is the default-executor workers of Playwright's own event loop (it writes
    screenshots from there): they belong to the session's browser and end with it.
    """
    before = thread_idents()
    yield
    tolerated = set().union(*(source() for source in _TOLERATED))
    check_no_leaked_threads(before | tolerated)


def idle(stop: StopEvent) -> None:
    """A well-behaved thread body: waits on its stop event, returns when it is set."""
    while not stop.wait(60.0):
        pass


@dataclass
class Runtime:
    """A registry with live supervised threads of several kinds, stopped at teardown."""

    registry: ThreadRegistry
    supervisor: Supervisor
    session: DiagnosticsSession
    threads: dict[str, Supervised] = field(default_factory=dict)
    releases: list[threading.Event] = field(default_factory=list)

    def spawn(
        self,
        kind: ThreadKind,
        name: str,
        *,
        group: ThreadGroup = ThreadGroup.INTERNAL,
        parent: str | None = None,
        target: Callable[[StopEvent], None] = idle,
    ) -> Supervised:
        """Start one supervised thread and remember it by name."""
        s = self.supervisor.spawn(
            kind,
            name,
            target,
            group=group,
            parent=self.threads[parent].record if parent else None,
        )
        self.threads[name] = s
        return s

    def stubborn(self, kind: ThreadKind, name: str) -> Supervised:
        """A thread that ignores its stop event until the test releases it (a fault)."""
        release = threading.Event()
        self.releases.append(release)

        def body(stop: StopEvent) -> None:
            release.wait(30.0)

        return self.spawn(kind, name, target=body)

    def stop(self) -> None:
        """Signal pollers, then internal threads, release stubborn ones and join all."""
        self.supervisor.signal(ThreadGroup.POLLER)
        self.supervisor.signal(ThreadGroup.INTERNAL)
        for release in self.releases:
            release.set()
        for s in self.supervisor.threads():
            if s.thread.is_alive():
                self.supervisor.reap(s, 5.0)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """Live threads: queue manager with two workers, scheduler with a schedule, and more."""
    registry = ThreadRegistry()
    rt = Runtime(
        registry,
        Supervisor(registry),
        DiagnosticsSession(registry, service_name="shop", enabled=True),
    )
    rt.spawn(ThreadKind.QUEUE, "dbos-queue-manager")
    rt.spawn(ThreadKind.QUEUE, "dbos-queue-worker[emails]", parent="dbos-queue-manager")
    rt.spawn(ThreadKind.QUEUE, "dbos-queue-worker[billing]", parent="dbos-queue-manager")
    rt.spawn(ThreadKind.SCHEDULER, "dbos-dynamic-scheduler")
    rt.spawn(ThreadKind.SCHEDULER, "dbos-schedule[nightly]", parent="dbos-dynamic-scheduler")
    rt.spawn(ThreadKind.POLLER, "dbos-cron[report]", group=ThreadGroup.POLLER)
    rt.spawn(ThreadKind.TIMEOUT, "dbos-deadlines")
    rt.spawn(ThreadKind.NOTIFICATION_LISTENER, "dbos-notification-listener")
    try:
        yield rt
    finally:
        rt.stop()


def record_shutdown(
    rt: Runtime, *, fault: bool, stuck_name: str = "dbos-stuck-listener"
) -> ShutdownTimeline:
    """Run the phases over ``rt`` with a ShutdownRecorder and keep the timeline.

    With ``fault``, a stubborn thread is still alive when ``close_databases`` emits
    ``db.close``: the PR #553 ordering bug the rules must catch.
    """
    stuck = rt.stubborn(ThreadKind.NOTIFICATION_LISTENER, stuck_name) if fault else None
    recorder = ShutdownRecorder(rt.registry, service="shop")
    recorder.begin()
    for phase in SHUTDOWN_PHASES:
        with recorder.phase(phase):
            if phase == specs.SIGNAL_POLLERS.name:
                rt.supervisor.signal(ThreadGroup.POLLER)
            elif phase == specs.SIGNAL_INTERNAL.name:
                rt.supervisor.signal(ThreadGroup.INTERNAL)
            elif phase == specs.INTERRUPT_DB.name:
                rt.registry.emit(EventType.DB_INTERRUPT, None, database="system")
            elif phase == specs.JOIN_THREADS.name:
                for s in rt.supervisor.threads():
                    if s is not stuck:
                        rt.supervisor.reap(s, 5.0)
            elif phase == specs.CLOSE_DATABASES.name:
                rt.registry.emit(EventType.DB_CLOSE, None, database="system")
    timeline = recorder.finish()
    rt.session.record_timeline(timeline)
    if stuck is not None:
        for release in rt.releases:
            release.set()
        rt.supervisor.reap(stuck, 5.0)
    return timeline


@pytest.fixture
def with_htmx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render pages as if htmx were present (it is git-ignored, copied by ``./run``)."""
    monkeypatch.setattr(_views, "htmx_available", lambda: True)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    """A TestClient over the live runtime's dashboard (lifespan run)."""
    with TestClient(create_app(runtime.session)) as c:
        yield c


def free_socket() -> socket.socket:
    """A listening socket on 127.0.0.1 with a port the OS picked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


class _Server(uvicorn.Server):
    """uvicorn that reports startup on a threading.Event (no polling, no sleep)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@dataclass
class Served:
    """An app served by uvicorn in a thread."""

    url: str
    server: _Server
    thread: threading.Thread


def serve(app: Starlette) -> Iterator[Served]:
    """Serve ``app`` on 127.0.0.1 (random free port) until the generator is closed."""
    sock = free_socket()
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True
    )
    thread.start()
    try:
        if not server.ready.wait(15.0):
            raise RuntimeError("uvicorn did not start within 15 s")
        yield Served(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(15.0)
        sock.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (Debian's; never a downloaded build)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    manager = sync_playwright()
    with manager as p:
        loop = manager._loop

        def executor_threads() -> set[int]:
            executor = getattr(loop, "_default_executor", None)
            threads = getattr(executor, "_threads", ())
            return {t.ident for t in threads if t.ident is not None}

        _TOLERATED.append(executor_threads)
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
            _TOLERATED.remove(executor_threads)


@pytest.fixture
def artifacts() -> Path:
    """Where browser tests save screenshots (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
