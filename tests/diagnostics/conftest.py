"""Fixtures for the diagnostics tests: a registry, a supervisor, and a leak check on every test."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

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
from spindle.runtime._supervisor import Supervisor
from spindle.testing import check_no_leaked_threads, thread_idents

# The plugin's fixtures, imported so this folder uses them even before the package is
# reinstalled with its pytest11 entry point (pytest_plugins is not allowed outside the root
# conftest, which is being written on main).
from spindle.testing._plugin import (  # noqa: F401
    spindle_no_leaked_threads,
    spindle_no_shutdown_violations,
    spindle_span_exporter,
)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Every test in this folder must end with no thread it started still alive."""
    before = thread_idents()
    yield
    check_no_leaked_threads(before, grace=10.0)


@pytest.fixture
def registry() -> ThreadRegistry:
    """A fresh registry."""
    return ThreadRegistry()


@pytest.fixture
def supervisor(registry: ThreadRegistry) -> Iterator[Supervisor]:
    """A supervisor whose threads are all signalled and joined when the test ends."""
    sup = Supervisor(registry)
    yield sup
    for s in sup.threads():
        s.stop.set()
    for s in sup.threads():
        s.thread.join(10.0)


WaitUntil = Callable[[Callable[[], bool]], None]


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> WaitUntil:
    """The :func:`wait_until` helper, as a fixture (test modules cannot import conftest)."""
    return wait_until


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Spin (yielding the CPU) until ``predicate()`` holds; for states no event announces.

    A thread "blocked inside Event.wait" has no event of its own to announce it, so the test
    watches its stack; os.sched_yield gives the CPU away without a timed sleep.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s: {predicate}")
        os.sched_yield()


class ShutdownScenario:
    """A real registry + supervisor + recorder running the phases, with hooks to break them.

    Threads: a poller and an internal thread that stop on their stop event, and a "DB user"
    that, once stopped, finishes an in-flight query (waits for ``db_released``) before exiting.
    """

    def __init__(self, registry: ThreadRegistry, supervisor: Supervisor) -> None:
        self.registry = registry
        self.supervisor = supervisor
        self.db_released = threading.Event()
        self.join_timeout = 10.0
        self.poller = supervisor.spawn(
            ThreadKind.POLLER, "dbos-scheduled[nightly]", _wait_for_stop, group=ThreadGroup.POLLER
        )
        self.internal = supervisor.spawn(ThreadKind.QUEUE, "dbos-queue-manager", _wait_for_stop)
        self.db_user = supervisor.spawn(ThreadKind.TIMEOUT, "dbos-timeout", self._db_user)

    def _db_user(self, stop: StopEvent) -> None:
        stop.wait()
        self.db_released.wait()  # the in-flight query, finishing

    # The default action of each phase: what a correct destroy() does.
    def signal_pollers(self) -> None:
        self.supervisor.signal(ThreadGroup.POLLER)

    def signal_internal(self) -> None:
        self.supervisor.signal(ThreadGroup.INTERNAL)

    def interrupt_db(self) -> None:
        self.db_released.set()
        self.registry.emit(EventType.DB_INTERRUPT, None, database="system")

    def join_threads(self) -> None:
        for s in self.supervisor.threads():
            self.supervisor.reap(s, self.join_timeout)

    def close_databases(self) -> None:
        for db in ("system", "application"):
            alive = [r.name for r in self.registry.live_records()]
            self.registry.emit(EventType.DB_CLOSE, None, database=db, alive_threads=alive)

    def run(
        self,
        phases: Sequence[str] = SHUTDOWN_PHASES,
        overrides: Mapping[str, Callable[[], None]] | None = None,
        session: DiagnosticsSession | None = None,
    ) -> ShutdownTimeline:
        """Run a recorded shutdown; ``overrides`` replaces the action of named phases."""
        actions: dict[str, Callable[[], None]] = {
            specs.SIGNAL_POLLERS.name: self.signal_pollers,
            specs.SIGNAL_INTERNAL.name: self.signal_internal,
            specs.INTERRUPT_DB.name: self.interrupt_db,
            specs.JOIN_THREADS.name: self.join_threads,
            specs.CLOSE_DATABASES.name: self.close_databases,
        }
        actions.update(overrides or {})
        recorder = ShutdownRecorder(self.registry, service="shop")
        recorder.begin()
        for name in phases:
            with recorder.phase(name):
                actions.get(name, _nothing)()
        timeline = recorder.finish()
        if session is not None:
            session.record_timeline(timeline)
        return timeline

    def cleanup(self) -> None:
        self.db_released.set()


def _wait_for_stop(stop: StopEvent) -> None:
    stop.wait()


def _nothing() -> None:
    pass


@pytest.fixture
def scenario(registry: ThreadRegistry, supervisor: Supervisor) -> Iterator[ShutdownScenario]:
    """A shutdown scenario whose threads are released at the end."""
    sc = ShutdownScenario(registry, supervisor)
    yield sc
    sc.cleanup()


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver on 127.0.0.1: decodes ExportTraceServiceRequest bodies.

    ``hold()`` makes it stop answering (an unresponsive collector) until released.
    """

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._cond = threading.Condition()
        self._held = threading.Event()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if receiver._held.is_set():
                    receiver._release.wait(30)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                payload = ExportTraceServiceResponse().SerializeToString()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the exporter gave up waiting (the hung-collector test)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/v1/traces"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="test-otlp-receiver", daemon=True
        )
        self._thread.start()

    def _add(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    received.append(ReceivedSpan(span, resource))
        with self._cond:
            self.requests += 1
            self.spans.extend(received)
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 30
    ) -> None:
        """Block until ``predicate(spans)`` holds (woken by each request), or fail."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.spans), timeout):
                raise AssertionError(f"spans not received in {timeout}s: {len(self.spans)} so far")

    def hold(self) -> None:
        """Stop answering requests until :meth:`release`."""
        self._held.set()

    def release(self) -> None:
        """Answer held and future requests."""
        self._held.clear()
        self._release.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class ReceivedSpan:
    """One decoded span, with plain attributes and its resource's attributes."""

    def __init__(self, span: Any, resource: dict[str, Any]) -> None:
        self.name: str = span.name
        self.span_id: bytes = span.span_id
        self.parent_span_id: bytes = span.parent_span_id
        self.trace_id: bytes = span.trace_id
        self.start_ns: int = span.start_time_unix_nano
        self.end_ns: int = span.end_time_unix_nano
        self.attributes = {kv.key: _value(kv.value) for kv in span.attributes}
        self.events = [
            (e.name, {kv.key: _value(kv.value) for kv in e.attributes}) for e in span.events
        ]
        self.resource = resource


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A live OTLP/HTTP receiver, stopped (and its threads joined) at the end of the test."""
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()
