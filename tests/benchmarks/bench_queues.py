"""Queued workflow throughput: Spindle against DBOS Transact 2.30, against the commit limit.

Run on demand (``./run bench`` runs it through ``test_queue_throughput``; fails if a row
could not run):

    python tests/benchmarks/bench_queues.py               # both backends, both impls
    python tests/benchmarks/bench_queues.py --backends sqlite --n 300

In one run it

1. measures the disk's durable commit rate: SQLite (WAL, synchronous=FULL) single-row
   autocommit inserts/s, and PostgreSQL single-row autocommit inserts/s;
2. enqueues N 3-step workflows on one queue (no limits) and waits for every result, for
   Spindle and for the ``dbos`` package (installed in its own venv under ``.bench-venvs/``,
   git-ignored, on first use), on both backends, each in its own process on a fresh
   database, with default queue settings (polling interval 1 s) for both;
3. prints wf/s, the Spindle/DBOS ratio, and the share of the commit limit
   (commit rate / 5: a 3-step workflow writes 5 checkpoints: enqueue, 3 steps, finish, each
   its own commit when written alone) with the commits per workflow counted (SQLite: a
   trace callback sees each commit that wrote; PostgreSQL: ``pg_stat_database.xact_commit``
   delta, read-only ones included). On SQLite, Spindle's group commit puts checkpoints that
   several threads write at once in one commit, so it needs fewer than 5 per workflow.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENVS = ROOT / ".bench-venvs"
DBOS_VERSION = "2.30.0"
PG_BASE = os.environ.get("SPINDLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
MIN_COMMITS = 5  # enqueue, one per step, the final update

DRIVER = textwrap.dedent(
    '''
    """Bench driver: one implementation, one backend; prints one JSON line."""
    import json
    import sqlite3
    import sys
    import time

    import sqlite_commits  # copied beside this driver

    args = json.loads(sys.argv[1])
    sqlite_commits.install()
    commits = sqlite_commits.commits


    if args["impl"] == "spindle":
        import spindle as measured
        from spindle import DBOS, Queue

        config = {"name": "bench", "system_database_url": args["url"],
                  "run_admin_server": False, "max_executor_threads": args["threads"]}
    else:
        import dbos as measured
        from dbos import DBOS, Queue

        config = {"name": "bench", "system_database_url": args["url"],
                  "max_executor_threads": args["threads"]}

    # Which package this process really imported (its version and where from).
    sqlite_commits.report_measured(measured)
    queue = Queue("bench")
    DBOS(config=config)


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


    probe_commits = [0]


    def probe_commit_rate(seconds):
        """Single-row autocommit inserts/s on the run's backend, now (the disk is shared).

        On PostgreSQL the probe writes to the run's database, so each of its statements (an
        autocommit transaction each) is counted in probe_commits and taken off exactly."""
        n = 0
        if args["url"].startswith("sqlite"):
            path = args["url"][len("sqlite:///"):] + ".probe"
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, v TEXT)")
            insert = lambda: conn.execute("INSERT INTO probe (v) VALUES (?)", ("x" * 32,))
        else:
            import psycopg

            conn = psycopg.connect(args["url"], autocommit=True)
            conn.execute("CREATE TABLE IF NOT EXISTS probe (id BIGSERIAL PRIMARY KEY, v TEXT)")
            probe_commits[0] += 1
            insert = lambda: conn.execute("INSERT INTO probe (v) VALUES (%s)", ("x" * 32,))
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            insert()
            n += 1
        conn.close()
        if not args["url"].startswith("sqlite"):
            probe_commits[0] += n
        return n / elapsed


    DBOS.launch()
    rate_before = probe_commit_rate(args["probe"])
    for i in range(args["warmup"]):
        assert queue.enqueue(three_steps, i).get_result() == i + 3
    n = args["n"]
    c0 = commits[0]
    t0 = time.perf_counter()
    handles = [queue.enqueue(three_steps, i) for i in range(n)]
    enqueued = time.perf_counter() - t0
    for i, h in enumerate(handles):
        assert h.get_result() == i + 3
    elapsed = time.perf_counter() - t0
    c1 = commits[0]
    rate_after = probe_commit_rate(args["probe"])
    DBOS.destroy()
    print("BENCH-RESULT " + json.dumps(
        {"elapsed": elapsed, "enqueue": enqueued, "n": n, "commits": c1 - c0,
         "rate": (rate_before + rate_after) / 2, "probe_commits": probe_commits[0],
         "measured": sqlite_commits.measured_of(measured)}), flush=True)
    '''
)


def dbos_python(version: str) -> Path:
    """The python of a venv holding dbos==version, created on first use."""
    venv = VENVS / f"dbos-{version}"
    python = venv / "bin" / "python"
    check = f"import importlib.metadata as m; assert m.version('dbos') == '{version}'"
    if python.exists() and subprocess.run([str(python), "-c", check]).returncode == 0:
        return python
    print(f"bench: installing dbos=={version} into {venv}", file=sys.stderr, flush=True)
    VENVS.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"dbos=={version}"], check=True)
    return python


def pg_connect(dbname: str = "postgres") -> Any:
    import psycopg

    return psycopg.connect(f"{PG_BASE}/{dbname}", autocommit=True)


def pg_create() -> str:
    name = f"spindle_qbench_{uuid.uuid4().hex[:10]}"
    with pg_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def pg_drop(name: str) -> None:
    with pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_xact_commit(name: str) -> int:
    with pg_connect() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def sqlite_commit_rate(tmp: Path, seconds: float) -> float:
    """Single-row autocommit inserts/s, WAL, synchronous=FULL."""
    conn = sqlite3.connect(tmp / "commit-rate.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    n = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 32,))
        n += 1
    conn.close()
    return n / elapsed


def postgres_commit_rate(seconds: float) -> float:
    """Single-row autocommit inserts/s."""
    name = pg_create()
    try:
        with pg_connect(name) as conn:
            conn.execute("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
            n = 0
            t0 = time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds:
                conn.execute("INSERT INTO t (v) VALUES (%s)", ("x" * 32,))
                n += 1
    finally:
        pg_drop(name)
    return n / elapsed


def run_driver(python: Path, driver: Path, spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    if spec["impl"] == "spindle":
        env["PYTHONPATH"] = str(ROOT)
    else:
        env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(python), str(driver), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=driver.parent,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            result: dict[str, Any] = json.loads(line[len("BENCH-RESULT ") :])
            return result
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"exit {proc.returncode}: {tail[:200]}")


def bench(
    backend: str, impl: str, python: Path, driver: Path, tmp: Path, opts: argparse.Namespace
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "impl": impl,
        "n": opts.n,
        "warmup": opts.warmup,
        "threads": opts.threads,
        "probe": opts.probe_seconds,
    }
    if backend == "sqlite":
        spec["url"] = f"sqlite:///{tmp / f'{impl}-{uuid.uuid4().hex[:6]}.sqlite'}"
        res = run_driver(python, driver, spec)
        res["commits_per_wf"] = res["commits"] / opts.n
        return res
    db = pg_create()
    try:
        spec["url"] = f"{PG_BASE}/{db}"
        before = pg_xact_commit(db)
        res = run_driver(python, driver, spec)
        time.sleep(0.5)  # exited backends flush their stats; let them land (not a test)
        # The probes' own commits, counted by the driver (not estimated from their rate).
        probes = res["probe_commits"]
        res["commits_per_wf"] = (pg_xact_commit(db) - before - probes) / (opts.n + opts.warmup)
    finally:
        pg_drop(db)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--impls", default=f"spindle,dbos-{DBOS_VERSION}")
    ap.add_argument("--n", type=int, default=500, help="workflows enqueued at once")
    ap.add_argument("--threads", type=int, default=16, help="executor threads")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rate-seconds", type=float, default=3.0)
    ap.add_argument(
        "--probe-seconds", type=float, default=1.0, help="commit-rate probe before/after a run"
    )
    ap.add_argument("--json", help="also write the results to this file")
    opts = ap.parse_args(argv)
    backends = [b for b in opts.backends.split(",") if b]
    impls = [i for i in opts.impls.split(",") if i]

    results: list[dict[str, Any]] = []
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="spindle-qbench-") as tmp_name:
        tmp = Path(tmp_name)
        driver = tmp / "driver.py"
        driver.write_text(DRIVER)
        shutil.copy(HERE / "_sqlite_commits.py", tmp / "sqlite_commits.py")
        pythons: dict[str, Path] = {}
        broken: dict[str, str] = {}
        for impl in impls:
            try:
                pythons[impl] = (
                    Path(sys.executable)
                    if impl == "spindle"
                    else dbos_python(impl.removeprefix("dbos-"))
                )
            except Exception as exc:
                broken[impl] = f"venv: {exc}"
        if "sqlite" in backends:
            rates["sqlite"] = sqlite_commit_rate(tmp, opts.rate_seconds)
        if "postgres" in backends:
            try:
                rates["postgres"] = postgres_commit_rate(opts.rate_seconds)
            except Exception as exc:
                # Every PostgreSQL row then reports this as why it could not run.
                print(f"bench: no PostgreSQL: {exc}", file=sys.stderr, flush=True)
        for backend in backends:
            for impl in impls:
                row: dict[str, Any] = {"backend": backend, "impl": impl}
                try:
                    if impl in broken:
                        raise RuntimeError(broken[impl])
                    res = bench(backend, impl, pythons[impl], driver, tmp, opts)
                    row.update(res, wfps=opts.n / res["elapsed"])
                except Exception as exc:
                    row["error"] = str(exc)
                results.append(row)
                print(
                    f"bench: {backend} {impl}: " + (row.get("error") or f"{row['wfps']:.1f} wf/s"),
                    file=sys.stderr,
                    flush=True,
                )

    mine = {r["backend"]: r.get("wfps") for r in results if r["impl"] == "spindle"}
    # "% limit": against the commit rate measured at the start; "rate@run" / "% @run":
    # against the rate probed in the run's own process just before and after it (the disk is
    # shared, and its rate moves several-fold within minutes).
    header = (
        f"{'backend':<9}{'impl':<13}{'wf/s':>8}{'spindle/x':>11}{'% limit':>9}"
        f"{'rate@run':>9}{'% @run':>9}{'commits/wf':>12}{'enqueue s':>11}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['backend']:<9}{r['impl']:<13}  could not run: {r['error']}")
            continue
        ratio = mine[r["backend"]] / r["wfps"] if mine.get(r["backend"]) else float("nan")
        share = 100 * r["wfps"] / (rates[r["backend"]] / MIN_COMMITS)
        share_now = 100 * r["wfps"] / (r["rate"] / MIN_COMMITS)
        print(
            f"{r['backend']:<9}{r['impl']:<13}{r['wfps']:>8.1f}{ratio:>11.2f}{share:>8.0f}%"
            f"{r['rate']:>9.0f}{share_now:>8.0f}%{r['commits_per_wf']:>12.2f}{r['enqueue']:>11.2f}"
        )
    print()
    for backend, rate in rates.items():
        print(
            f"{backend}: commit rate {rate:.0f}/s -> commit limit {rate / MIN_COMMITS:.1f} wf/s"
            f" ({MIN_COMMITS} commits per queued 3-step workflow)"
        )
    print(
        f"{opts.n} workflows enqueued at once on a queue with no limits, {opts.threads} "
        f"executor threads, {opts.warmup} warm-up workflows; default polling intervals"
    )
    for impl, measured in sorted({(r["impl"], r["measured"]) for r in results if "error" not in r}):
        print(f"measured {impl}: {measured}")
    if opts.json:
        Path(opts.json).write_text(json.dumps({"rates": rates, "runs": results}, indent=2))
    failed = [f"{r['backend']} {r['impl']}" for r in results if "error" in r]
    if failed:
        print(f"bench: {len(failed)} row(s) could not run: {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def test_queue_throughput() -> None:
    """``./run bench`` (pytest -s): queued throughput, printed; fails if a row could not run.

    SPINDLE_BENCH_QUEUES_ARGS passes options, e.g. ``--backends sqlite --n 200``.
    """
    assert main(shlex.split(os.environ.get("SPINDLE_BENCH_QUEUES_ARGS", ""))) == 0


if __name__ == "__main__":
    raise SystemExit(main())
