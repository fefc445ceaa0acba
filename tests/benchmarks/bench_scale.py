"""Scale: concurrency against the commit limit, cost with a large table, recovery, processes.

Run on demand (never collected by pytest unless this folder is named):

    python tests/benchmarks/bench_scale.py                       # everything
    python tests/benchmarks/bench_scale.py --parts throughput --backends postgres

Every figure is a ratio taken inside one run, because the disk and the two cores are shared:

* throughput: 3-step workflows sequentially (direct calls), from 16 client threads calling
  them directly (concurrent), and through an unlimited queue (queued), Spindle and the
  ``dbos`` package side by side (each in its own process on a fresh database). The disk's
  commit rate is probed in the coordinator with 1 and 16 autocommit writers right before and
  after each run; the limit is commit rate / 5 (a 3-step workflow needs 5 commits).
* large: sequential throughput on the empty system database, then again after 1,000,000
  finished workflows (and their steps) were bulk-inserted with SQL (generate_series on
  PostgreSQL, a recursive CTE on SQLite), ``list_workflows(limit=100)`` and the queries behind
  the admin routes at both sizes, and a batched garbage collection of 100,000 of them while a
  client keeps running workflows (its slowest workflow during the GC against before). Spindle
  only: the rows are written in Spindle's schema.
* recovery: 10,000 PENDING workflows of this executor (bulk-inserted) that each sleep
  durably; ``launch()``'s duration, and the time until all finished against the floor the
  executor size sets (ceil(n / threads) x sleep).
* processes (PostgreSQL): 1, 2 and 4 processes draining one queue of bulk-enqueued
  workflows; aggregate wf/s and the share of the 16-writer commit limit.

A row that cannot run prints why and makes the run fail (exit 1, a failed test).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_workflows as bw  # noqa: E402  (the shared helpers: venvs, databases)

DBOS_VERSION = "2.30.0"
MIN_COMMITS = bw.MIN_COMMITS

DRIVER = textwrap.dedent(
    '''
    """bench_scale driver: one part, one implementation, one backend; prints one JSON line."""
    import json
    import math
    import pickle
    import statistics
    import sys
    import threading
    import time

    args = json.loads(sys.argv[1])
    impl, part, url = args["impl"], args["part"], args["url"]
    spindle = impl.startswith("spindle")
    if spindle:
        from spindle import DBOS, Queue
        config = {"name": "bench", "system_database_url": url, "run_admin_server": False,
                  "max_executor_threads": args["threads"]}
        if args.get("executor_id"):
            config["executor_id"] = args["executor_id"]
    else:
        from dbos import DBOS, Queue
        config = {"name": "bench", "system_database_url": url,
                  "max_executor_threads": args["threads"]}
    DBOS(config=config)
    queue = Queue("scale", polling_interval_sec=0.01)


    @DBOS.step()
    def step_one(x):
        return x + 1


    @DBOS.step()
    def step_two(x):
        return x + 1


    @DBOS.step()
    def step_three(x):
        return x + 1


    @DBOS.workflow()
    def three_steps(x):
        return step_three(step_two(step_one(x)))


    @DBOS.workflow()
    def sleepy():
        DBOS.sleep(args.get("sleep", 0.1))
        return 1


    def seq(n):
        t0 = time.perf_counter()
        for i in range(n):
            assert three_steps(i) == i + 3
        return n / (time.perf_counter() - t0)


    def conc(n, clients):
        per = n // clients
        def client():
            for i in range(per):
                assert three_steps(i) == i + 3
        ts = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return per * clients / (time.perf_counter() - t0)


    def queued(n, clients):
        """The same 16 client threads, each enqueueing its share and then waiting."""
        per = n // clients
        def client():
            hs = [queue.enqueue(three_steps, i) for i in range(per)]
            for i, h in enumerate(hs):
                assert h.get_result() == i + 3
        ts = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return per * clients / (time.perf_counter() - t0)


    def queued_one(n):
        """One client thread enqueueing everything, then waiting."""
        t0 = time.perf_counter()
        hs = [queue.enqueue(three_steps, i) for i in range(n)]
        for i, h in enumerate(hs):
            assert h.get_result() == i + 3
        return n / (time.perf_counter() - t0)


    def timed(fn, reps=7):
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1000)
        return statistics.median(samples)


    def engine():
        return DBOS.runtime.sysdb.engine


    def bulk(sql_pg, sql_sqlite, n, params):
        import sqlalchemy as sa
        eng = engine()
        sqlite = eng.dialect.name == "sqlite"
        if sqlite:
            gen = ("WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < :n) ")
            sql = gen + sql_sqlite.replace("{s}", "")
        else:
            sql = sql_pg.replace("{s}", "dbos.").replace("{g}", "generate_series(1, :n) AS g(x)")
        with eng.begin() as conn:
            conn.execute(sa.text(sql), {"n": n, **params})
            conn.execute(sa.text("ANALYZE"))


    STATUS_COLS = ("workflow_uuid, status, name, inputs, output, executor_id, created_at,"
                   " updated_at, recovery_attempts, queue_name, priority")


    def insert_workflows(prefix, n, status, name, executor, queue_name, t0, args=(1,)):
        inputs = pickle.dumps((args, {}))
        output = pickle.dumps(4) if status == "SUCCESS" else None
        select = (f"SELECT :p || x, :st, :nm, :inp, :out, :ex, :t0 + x, :t0 + x, 0, :q, 0")
        bulk(f"INSERT INTO {{s}}workflow_status ({STATUS_COLS}) {select} FROM {{g}}",
             f"INSERT INTO {{s}}workflow_status ({STATUS_COLS}) {select} FROM g", n,
             {"p": prefix, "st": status, "nm": name, "inp": inputs, "out": output,
              "ex": executor, "q": queue_name, "t0": t0})


    def insert_steps(prefix, n, steps, t0):
        out = pickle.dumps(2)
        for fid in range(1, steps + 1):
            select = "SELECT :p || x, :fid, 'step_one', :out, :t0 + x"
            cols = "workflow_uuid, function_id, function_name, output, completed_at"
            bulk(f"INSERT INTO {{s}}operation_outputs ({cols}) {select} FROM {{g}}",
                 f"INSERT INTO {{s}}operation_outputs ({cols}) {select} FROM g", n,
                 {"p": prefix, "fid": fid, "out": out, "t0": t0})


    def queries():
        """The queries behind list_workflows and the admin/dashboard routes (ms, medians)."""
        from spindle.runtime import _admin_db
        from spindle.runtime._metrics import database_families
        rt = DBOS.runtime
        some = DBOS.list_workflows(limit=1, sort_desc=True)[0].workflow_id
        # The first scrape of a database installs the counts by status (one full count,
        # once); every later scrape reads them.
        t = time.perf_counter()
        database_families(rt)
        first_scrape = (time.perf_counter() - t) * 1000
        return {
            "metrics_first": first_scrape,
            "list100": timed(lambda: DBOS.list_workflows(limit=100)),
            "list100_desc": timed(lambda: DBOS.list_workflows(limit=100, sort_desc=True)),
            "list100_success": timed(lambda: DBOS.list_workflows(status="SUCCESS", limit=100,
                                                                 sort_desc=True)),
            "list100_by_name": timed(lambda: DBOS.list_workflows(name="three_steps", limit=100)),
            "queued100": timed(lambda: DBOS.list_queued_workflows(limit=100)),
            "get_status": timed(lambda: DBOS.get_workflow_status(some)),
            "steps": timed(lambda: _admin_db.list_steps(rt.sysdb, some)),
            "pending_ids": timed(lambda: rt.sysdb.pending_workflow_ids(["local"], "x")),
            "metrics_counts": timed(lambda: database_families(rt)),
        }


    def workflow_latencies(stop, out):
        while not stop.is_set():
            t0 = time.perf_counter()
            three_steps(1)
            out.append(time.perf_counter() - t0)


    result = {}
    if part == "migrate":
        DBOS.launch()
    elif part == "throughput":
        DBOS.launch()
        for i in range(args["warmup"]):
            three_steps(i)
        n = args["n"]
        result["seq"] = seq(n // 2)
        result["conc"] = conc(n, args["clients"])
        result["queued"] = queued(n, args["clients"])
        result["queued1"] = queued_one(n)
        result["seq2"] = seq(n // 2)
    elif part == "build":
        DBOS.launch()
        t = time.perf_counter()
        big = args["rows"]
        insert_workflows("big-", big, "SUCCESS", "three_steps", "old", None, args["base"])
        insert_steps("big-", big, 3, args["base"])
        result["build_s"] = time.perf_counter() - t
    elif part == "measure":
        DBOS.launch()
        for i in range(args["warmup"]):
            three_steps(i)
        result["seq"] = seq(args["n"])
        result["conc"] = conc(args["n"], args["clients"])
        result["queries"] = queries()
    elif part == "gc":
        # GC of the oldest gc_rows while a client runs workflows: its latency meanwhile
        # against its latency just before.
        DBOS.launch()
        from spindle.runtime import _admin_db
        stop, before, during = threading.Event(), [], []
        th = threading.Thread(target=workflow_latencies, args=(stop, before))
        th.start(); time.sleep(1.0); stop.set(); th.join()
        stop = threading.Event()
        th = threading.Thread(target=workflow_latencies, args=(stop, during))
        th.start()
        t = time.perf_counter()
        deleted = _admin_db.garbage_collect(
            DBOS.runtime.sysdb, cutoff_epoch_ms=args["base"] + args["gc_rows"] + 1,
            rows_threshold=None)
        result["gc_s"] = time.perf_counter() - t
        stop.set(); th.join()
        result["gc_deleted"] = deleted
        result["lat_before_max_ms"] = max(before) * 1000
        result["lat_before_p50_ms"] = statistics.median(before) * 1000
        result["lat_gc_max_ms"] = max(during) * 1000
        result["lat_gc_p50_ms"] = statistics.median(during) * 1000
    elif part == "recovery":
        DBOS.launch()
        n = args["n"]
        insert_workflows("rec-", n, "PENDING", "sleepy", "local", None,
                         int(time.time() * 1000) - 60_000, args=())
        DBOS.destroy()
        t = time.perf_counter()
        DBOS.launch()
        result["launch_s"] = time.perf_counter() - t
        import sqlalchemy as sa
        from spindle.runtime._schema import workflow_status as ws
        eng = engine()
        ours = ws.c.workflow_uuid.like("rec-%")
        running = sa.select(sa.func.count()).where(ours, ws.c.status == "PENDING")
        while True:
            with eng.connect() as conn:
                if conn.execute(running).scalar() == 0:
                    break
            time.sleep(0.1)
        result["all_done_s"] = time.perf_counter() - t
        with eng.connect() as conn:
            ok = conn.execute(sa.select(sa.func.count()).where(ours, ws.c.status == "SUCCESS"))
            if ok.scalar() != n:
                raise SystemExit("recovered workflows did not all succeed")
        result["floor_s"] = math.ceil(n / args["threads"]) * args["sleep"]
    elif part == "drain":
        print("READY", flush=True)
        sys.stdin.readline()
        t = time.perf_counter()
        DBOS.launch()
        result["launch_s"] = time.perf_counter() - t
        import sqlalchemy as sa
        from spindle.runtime._schema import workflow_status as ws
        eng = engine()
        left = sa.select(sa.func.count()).where(ws.c.queue_name == "scale",
                                                ws.c.status.in_(["ENQUEUED", "PENDING"]))
        while True:
            with eng.connect() as conn:
                if conn.execute(left).scalar() == 0:
                    break
            time.sleep(0.02)
        with eng.connect() as conn:
            mine = sa.select(sa.func.count()).where(ws.c.executor_id == args["executor_id"])
            result["ran"] = conn.execute(mine).scalar()
    DBOS.destroy()
    print("BENCH-RESULT " + json.dumps(result), flush=True)
    '''
)


# -- the disk's commit rate, 1 and 16 writers -------------------------------------------------


class Commits:
    """Durable single-row autocommit inserts: the commit limit, probed around every run."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self.db: str | None = None
        if backend == "sqlite":
            self.path = tmp / "probe.sqlite"
        else:
            self.db = bw.pg_create()
        self.samples: dict[int, list[float]] = {1: [], 16: []}
        self._setup()

    def _connect(self) -> Any:
        if self.backend == "sqlite":
            import sqlite3

            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            return conn
        return bw.pg_connect(self.db or "postgres")

    def _setup(self) -> None:
        conn = self._connect()
        key = "INTEGER PRIMARY KEY" if self.backend == "sqlite" else "BIGSERIAL PRIMARY KEY"
        conn.execute(f"CREATE TABLE IF NOT EXISTS t (id {key}, v TEXT)")
        conn.close()

    def rate(self, writers: int, seconds: float = 1.0) -> float:
        counts = [0] * writers
        failures: list[BaseException] = []
        ph = "?" if self.backend == "sqlite" else "%s"

        def writer(k: int) -> None:
            try:
                conn = self._connect()
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    conn.execute(f"INSERT INTO t (v) VALUES ({ph})", ("x" * 32,))
                    counts[k] += 1
                conn.close()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise RuntimeError(f"commit probe failed: {failures[0]}")
        value = sum(counts) / seconds
        self.samples[writers].append(value)
        return value

    def around(self, writers: tuple[int, ...] = (1, 16)) -> dict[int, float]:
        return {w: self.rate(w) for w in writers}

    def close(self) -> None:
        if self.db is not None:
            bw.pg_drop(self.db)


# -- running drivers -----------------------------------------------------------------------------


@dataclass
class Ctx:
    tmp: Path
    driver: Path
    pythons: dict[str, Path]
    threads: int
    errors: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)


def _env(impl: str) -> dict[str, str]:
    env = dict(os.environ)
    if impl.startswith("spindle"):
        env["PYTHONPATH"] = str(bw.SPINDLE_TREES.get(impl, bw.ROOT))
    else:
        env.pop("PYTHONPATH", None)
    return env


def _spec(ctx: Ctx, impl: str, part: str, url: str, **extra: Any) -> list[str]:
    spec = {"impl": impl, "part": part, "url": url, "threads": ctx.threads, **extra}
    return [str(ctx.pythons[impl]), str(ctx.driver), json.dumps(spec)]


def _result(proc_out: str, err: str, code: int | None) -> dict[str, Any]:
    for line in proc_out.splitlines():
        if line.startswith("BENCH-RESULT "):
            out: dict[str, Any] = json.loads(line[len("BENCH-RESULT ") :])
            return out
    tail = (err.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"exit {code}: {tail[:200]}")


#: Parts run with the baseline tree (--baseline, --base-parts) instead of this one.
BASE_PARTS: set[str] = set()


def drive(ctx: Ctx, impl: str, part: str, url: str, **extra: Any) -> dict[str, Any]:
    if impl == "spindle" and part in BASE_PARTS:
        impl = "spindle-base"
    proc = subprocess.run(
        _spec(ctx, impl, part, url, **extra),
        capture_output=True,
        text=True,
        env=_env(impl),
        timeout=1800,
        cwd=ctx.driver.parent,
    )
    return _result(proc.stdout, proc.stderr, proc.returncode)


class Database:
    """A fresh system database for one run (a PostgreSQL database or an SQLite file)."""

    def __init__(self, backend: str, tmp: Path, tag: str) -> None:
        self.backend = backend
        self.pg: str | None = None
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp / f'{tag}-{time.monotonic_ns()}.sqlite'}"
        else:
            self.pg = bw.pg_create()
            self.url = f"{bw.PG_BASE}/{self.pg}"

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self.pg is not None:
            bw.pg_drop(self.pg)


def attempt(ctx: Ctx, what: str, fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:
        ctx.errors.append(f"{what}: {exc}")
        ctx.say(f"  {what}: could not run: {exc}")
        return None


# -- parts ---------------------------------------------------------------------------------------


def part_throughput(ctx: Ctx, backend: str, impls: list[str], opts: Any) -> None:
    probe = Commits(backend, ctx.tmp)
    try:
        ctx.say(
            f"\n[throughput {backend}] {opts.n} workflows per mode, 3 steps, "
            f"{opts.clients} client threads, {ctx.threads} executor threads"
        )
        ctx.say(
            f"{'impl':<14}{'seq':>7}{'conc':>7}{'queued':>8}{'q1':>7}{'conc/seq':>9}"
            f"{'q/conc':>8}{'q1/conc':>8}{'1w/s':>8}{'16w/s':>8}{'%16w':>6}"
        )
        # Per implementation: queued / concurrent of each run (the ratio issue 19 tracks).
        ratios: dict[str, list[float]] = {}
        # Interleaved (each repeat runs every implementation), so a change in the shared
        # machine's load falls on all of them alike.
        for _ in range(opts.repeat):
            for impl in impls:
                before = probe.around()

                def run(impl: str = impl) -> dict[str, Any]:
                    with Database(backend, ctx.tmp, impl) as url:
                        return drive(
                            ctx,
                            impl,
                            "throughput",
                            url,
                            n=opts.n,
                            clients=opts.clients,
                            warmup=opts.warmup,
                        )

                res = attempt(ctx, f"{backend} {impl} throughput", run)
                after = probe.around()
                if res is None:
                    continue
                w1 = (before[1] + after[1]) / 2
                w16 = (before[16] + after[16]) / 2
                seq = (res["seq"] + res["seq2"]) / 2
                ratios.setdefault(impl, []).append(res["queued"] / res["conc"])
                ctx.say(
                    f"{impl:<14}{seq:>7.0f}{res['conc']:>7.0f}{res['queued']:>8.0f}"
                    f"{res['queued1']:>7.0f}{res['conc'] / seq:>9.2f}"
                    f"{res['queued'] / res['conc']:>8.2f}{res['queued1'] / res['conc']:>8.2f}"
                    f"{w1:>8.0f}{w16:>8.0f}{100 * res['conc'] / (w16 / MIN_COMMITS):>5.0f}%"
                )
        for impl, values in ratios.items():
            ctx.say(
                f"  {impl} queued/concurrent: median {statistics.median(values):.2f} "
                f"(range {min(values):.2f}-{max(values):.2f}, {len(values)} runs)"
            )
    finally:
        probe.close()


def part_large(ctx: Ctx, backend: str, opts: Any) -> None:
    ctx.say(
        f"\n[large {backend}] {opts.rows:,} finished workflows (+3 steps each) bulk-inserted; "
        f"{opts.large_rounds} rounds alternating a process on an empty and on the large "
        f"database, {opts.large_n} workflows per mode"
    )
    base = int(time.time() * 1000) - 10 * opts.rows - 86_400_000  # older than everything

    def run() -> None:
        with (
            Database(backend, ctx.tmp, "empty") as empty,
            Database(backend, ctx.tmp, "large") as large,
        ):
            drive(ctx, "spindle", "migrate", empty)
            built = drive(ctx, "spindle", "build", large, rows=opts.rows, base=base)
            ctx.say(f"  build {built['build_s']:.1f} s")
            ratios: dict[str, list[float]] = {"seq": [], "conc": []}
            last: dict[str, dict[str, Any]] = {}
            for r in range(opts.large_rounds):
                order = [("empty", empty), ("large", large)]
                if r % 2:
                    order.reverse()  # neither size always runs first
                for label, url in order:
                    last[label] = drive(
                        ctx,
                        "spindle",
                        "measure",
                        url,
                        n=opts.large_n,
                        clients=opts.clients,
                        warmup=opts.warmup,
                    )
                for mode in ratios:
                    ratios[mode].append(last["large"][mode] / last["empty"][mode])
                ctx.say(
                    f"  round {r + 1}: seq empty {last['empty']['seq']:.0f} large "
                    f"{last['large']['seq']:.0f} wf/s; conc empty {last['empty']['conc']:.0f} "
                    f"large {last['large']['conc']:.0f} wf/s"
                )
            for mode, values in ratios.items():
                ctx.say(
                    f"  {mode} large/empty: median {statistics.median(values):.2f} "
                    f"({', '.join(f'{v:.2f}' for v in values)})"
                )
            q_empty, q_large = last["empty"]["queries"], last["large"]["queries"]
            for key in q_empty:
                ctx.say(f"  {key:<16} empty {q_empty[key]:7.2f} ms   large {q_large[key]:7.2f} ms")
            res = drive(ctx, "spindle", "gc", large, base=base, gc_rows=opts.gc_rows)
            ctx.say(
                f"  gc of {res['gc_deleted']:,} rows in batches: {res['gc_s']:.1f} s; a "
                f"client's workflows meanwhile p50 {res['lat_gc_p50_ms']:.1f} ms max "
                f"{res['lat_gc_max_ms']:.0f} ms (before: p50 {res['lat_before_p50_ms']:.1f} "
                f"ms max {res['lat_before_max_ms']:.0f} ms)"
            )

    attempt(ctx, f"{backend} large", run)


def part_recovery(ctx: Ctx, backend: str, opts: Any) -> None:
    ctx.say(
        f"\n[recovery {backend}] {opts.recovery_n:,} PENDING workflows sleeping "
        f"{opts.sleep:g} s, {opts.recovery_threads} executor threads"
    )

    def run() -> dict[str, Any]:
        with Database(backend, ctx.tmp, "recovery") as url:
            saved, ctx.threads = ctx.threads, opts.recovery_threads
            try:
                return drive(ctx, "spindle", "recovery", url, n=opts.recovery_n, sleep=opts.sleep)
            finally:
                ctx.threads = saved

    res = attempt(ctx, f"{backend} recovery", run)
    if res is None:
        return
    ctx.say(
        f"  launch() {res['launch_s']:.2f} s; all done {res['all_done_s']:.1f} s; "
        f"floor {res['floor_s']:.1f} s; ratio {res['all_done_s'] / res['floor_s']:.2f}"
    )


def part_processes(ctx: Ctx, opts: Any) -> None:
    ctx.say(
        f"\n[processes postgres] {opts.drain_n} bulk-enqueued 3-step workflows, one "
        f"unlimited queue, {ctx.threads} executor threads per process"
    )
    probe = Commits("postgres", ctx.tmp)
    try:
        ctx.say(f"{'procs':<7}{'wf/s':>7}{'16w/s':>8}{'%16w':>6}{'conns':>7}  per process")
        peaks: list[int] = []
        for k in opts.procs:
            rates = probe.around((16,))

            def run(k: int = k) -> tuple[float, list[int]]:
                with Database("postgres", ctx.tmp, "drain") as url:
                    drive(ctx, "spindle", "migrate", url)
                    _enqueue(url, opts.drain_n)
                    procs = [
                        subprocess.Popen(
                            _spec(ctx, "spindle", "drain", url, executor_id=f"p{i}"),
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True,
                            env=_env("spindle"),
                            cwd=ctx.driver.parent,
                        )
                        for i in range(k)
                    ]
                    for p in procs:
                        assert p.stdout is not None
                        if p.stdout.readline().strip() != "READY":
                            raise RuntimeError("a drain process did not start")
                    peak = _ConnectionPeak(url.rsplit("/", 1)[1])
                    t0 = time.perf_counter()
                    for p in procs:
                        assert p.stdin is not None
                        p.stdin.write("go\n")
                        p.stdin.flush()
                    outs = [p.communicate(timeout=900) for p in procs]
                    elapsed = time.perf_counter() - t0
                    peaks.append(peak.stop())
                    ran = [
                        _result(o, e, p.returncode)["ran"]
                        for (o, e), p in zip(outs, procs, strict=True)
                    ]
                    if sum(ran) != opts.drain_n:
                        raise RuntimeError(f"ran {sum(ran)} of {opts.drain_n}")
                    return opts.drain_n / elapsed, ran

            res = attempt(ctx, f"postgres {k} processes", run)
            rates16 = (rates[16] + probe.rate(16)) / 2
            if res is not None:
                wfps, ran = res
                ctx.say(
                    f"{k:<7}{wfps:>7.0f}{rates16:>8.0f}"
                    f"{100 * wfps / (rates16 / MIN_COMMITS):>5.0f}%{peaks[-1]:>7}  {ran}"
                )
    finally:
        probe.close()


class _ConnectionPeak:
    """The most backends connected to one database, sampled every 50 ms."""

    def __init__(self, dbname: str) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(dbname,))
        self._thread.start()

    def _run(self, dbname: str) -> None:
        with bw.pg_connect() as conn:
            while not self._stop.wait(0.05):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _enqueue(url: str, n: int) -> None:
    """``n`` ENQUEUED rows of queue ``scale``, as a client would write them, in one INSERT."""
    import pickle

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, inputs, executor_id,"
            " created_at, updated_at, recovery_attempts, queue_name, priority)"
            " SELECT 'q-' || x, 'ENQUEUED', 'three_steps', %s, 'client', %s + x, %s + x, 0,"
            " 'scale', 0 FROM generate_series(1, %s) AS g(x)",
            (pickle.dumps(((1,), {})), int(time.time() * 1000), int(time.time() * 1000), n),
        )


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="throughput,large,recovery,processes")
    ap.add_argument("--backends", default="postgres,sqlite")
    ap.add_argument("--impls", default=f"spindle,dbos-{DBOS_VERSION}")
    ap.add_argument("--n", type=int, default=1600, help="workflows per throughput mode")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--threads", type=int, default=16, help="executor threads")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1_000_000, help="finished workflows (large)")
    ap.add_argument("--large-n", type=int, default=800, help="workflows per large-table mode")
    ap.add_argument("--large-rounds", type=int, default=3)
    ap.add_argument("--gc-rows", type=int, default=100_000)
    ap.add_argument("--recovery-n", type=int, default=10_000)
    ap.add_argument("--recovery-threads", type=int, default=64)
    ap.add_argument("--sleep", type=float, default=0.5, help="each recovered workflow's sleep")
    ap.add_argument("--drain-n", type=int, default=3000)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument(
        "--baseline",
        metavar="TREE",
        help="also run the Spindle checked out at TREE as 'spindle-base' (throughput), and "
        "use it instead of this tree for --base-parts, for before/after figures",
    )
    ap.add_argument("--base-parts", default="", help="parts run with the baseline tree")
    opts = ap.parse_args(argv)
    opts.procs = [int(p) for p in opts.procs.split(",") if p]
    parts = [p for p in opts.parts.split(",") if p]
    backends = [b for b in opts.backends.split(",") if b]
    impls = [i for i in opts.impls.split(",") if i]

    with tempfile.TemporaryDirectory(prefix="spindle-scale-") as tmp_name:
        tmp = Path(tmp_name)
        driver = tmp / "driver.py"
        driver.write_text(DRIVER)
        ctx = Ctx(tmp, driver, {"spindle": Path(sys.executable)}, opts.threads)
        if opts.baseline:
            bw.SPINDLE_TREES["spindle-base"] = Path(opts.baseline).resolve()
            ctx.pythons["spindle-base"] = Path(sys.executable)
            if "spindle-base" not in impls:
                impls.insert(0, "spindle-base")
            for part in opts.base_parts.split(","):
                if part:
                    # This part measures the baseline tree instead (same driver, same rows).
                    BASE_PARTS.add(part)
        ctx.say(
            f"bench_scale: load average {os.getloadavg()[0]:.2f} at start, {os.cpu_count()} cores"
        )
        for impl in impls:
            if impl.startswith("dbos-"):
                python = attempt(ctx, f"{impl} venv", lambda i=impl: bw.dbos_python(i[5:]))
                if python is not None:
                    ctx.pythons[impl] = python
        runnable = [i for i in impls if i in ctx.pythons]
        pg_error = bw.pg_available() if "postgres" in backends else None
        if pg_error is not None:
            ctx.errors.append(f"postgres: {pg_error}")
            ctx.say(f"postgres: could not run: {pg_error}")
            backends = [b for b in backends if b != "postgres"]
        for backend in backends:
            if "throughput" in parts:
                part_throughput(ctx, backend, runnable, opts)
            if "large" in parts:
                part_large(ctx, backend, opts)
            if "recovery" in parts:
                part_recovery(ctx, backend, opts)
        if "processes" in parts and pg_error is None and "postgres" in backends:
            part_processes(ctx, opts)
        if "postgres" in backends:
            pg = bw.pg_settings()
            ctx.say("\npostgres " + ", ".join(f"{k}={v}" for k, v in pg.items()))
        ctx.say(f"load average {os.getloadavg()[0]:.2f} at end")
        if ctx.errors:
            print("\nrows that could not run:\n  " + "\n  ".join(ctx.errors), flush=True)
            return 1
    return 0


def test_scale() -> None:
    """``./run bench`` (pytest -s): everything, printed; fails when a row cannot run.

    SPINDLE_BENCH_SCALE_ARGS passes options, e.g. ``--parts large --backends sqlite``.
    """
    assert main(shlex.split(os.environ.get("SPINDLE_BENCH_SCALE_ARGS", ""))) == 0


if __name__ == "__main__":
    raise SystemExit(main())
