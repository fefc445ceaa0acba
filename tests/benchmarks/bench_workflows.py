"""Workflow throughput: Spindle against DBOS Transact, measured against the disk's commit rate.

Run on demand (never collected by pytest):

    python tests/benchmarks/bench_workflows.py            # everything
    python tests/benchmarks/bench_workflows.py --impls spindle --backends sqlite

In one run it

1. measures the disk's durable commit rate: SQLite (WAL, synchronous=FULL) single-row
   autocommit inserts, and PostgreSQL single-row autocommit inserts;
2. runs 3-step workflows sequentially (direct calls) and concurrently (``start_workflow``
   on an executor pool) for Spindle and for the ``dbos`` package (each version installed
   in its own venv under ``.bench-venvs/``, git-ignored), on both backends, each run in
   its own process on a fresh database;
3. prints a table: workflows/s, the Spindle/DBOS ratio, the share of the commit limit
   (commit rate / 5: a 3-step workflow needs at least 5 commits) and the commits each
   workflow really made.

Commits are counted, not assumed. SQLite: a trace callback on every connection of the
measured process sees each ``BEGIN``/``COMMIT`` and each write statement, and counts the
commits of transactions that wrote (an autocommit write is a commit of its own).
PostgreSQL: ``pg_stat_database.xact_commit`` of the run's database, before the process
starts and after it exits, less the same delta for a run that only launches and
destroys; it includes read-only transactions and background polling.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".bench-venvs"
DBOS_VERSIONS = ("2.30.0", "3.4.0")
PG_BASE = os.environ.get("SPINDLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
STEPS = 3
MIN_COMMITS = STEPS + 2  # the status insert, one per step, the final update

DRIVER = textwrap.dedent(
    '''
    """Bench driver: one implementation, one backend, one mode; prints one JSON line."""
    import json
    import sqlite3
    import sys
    import threading
    import time

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    args = json.loads(sys.argv[1])
    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
    commits = [0]
    pragmas = []
    lock = threading.Lock()


    def tracer():
        state = {"in": False, "dirty": False}

        def cb(sql):
            s = sql.lstrip().upper()
            if s.startswith("BEGIN"):
                state["in"], state["dirty"] = True, False
            elif s.startswith(("COMMIT", "END")):
                if state["in"] and state["dirty"]:
                    with lock:
                        commits[0] += 1
                state["in"] = False
            elif s.startswith("ROLLBACK") and not s.startswith("ROLLBACK TO"):
                state["in"] = False
            elif s.startswith(WRITES):
                if state["in"]:
                    state["dirty"] = True
                else:
                    with lock:
                        commits[0] += 1
            elif s.startswith("PRAGMA"):
                with lock:
                    pragmas.append(sql.strip())

        return cb


    @event.listens_for(Engine, "connect")
    def _trace(dbapi_conn, _record):
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.set_trace_callback(tracer())


    if args["impl"] == "spindle":
        from spindle import DBOS

        config = {"name": "bench", "system_database_url": args["url"],
                  "run_admin_server": False, "max_executor_threads": args["threads"]}
    else:
        from dbos import DBOS

        config = {"name": "bench", "system_database_url": args["url"],
                  "max_executor_threads": args["threads"]}

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


    DBOS.launch()
    n, mode = args["n"], args["mode"]
    for i in range(args["warmup"]):
        assert three_steps(i) == i + 3
    c0 = commits[0]
    t0 = time.perf_counter()
    if mode == "seq":
        for i in range(n):
            assert three_steps(i) == i + 3
    elif mode == "conc":
        handles = [DBOS.start_workflow(three_steps, i) for i in range(n)]
        for i, h in enumerate(handles):
            assert h.get_result() == i + 3
    elapsed = time.perf_counter() - t0
    c1 = commits[0]
    DBOS.destroy()
    print("BENCH-RESULT " + json.dumps({
        "elapsed": elapsed, "n": n, "commits": c1 - c0, "pragmas": sorted(set(pragmas)),
    }), flush=True)
    '''
)


@dataclass
class Run:
    backend: str
    impl: str
    mode: str
    wfps: float | None = None
    commits_per_wf: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- environments --------------------------------------------------------------------------


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
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"dbos=={version}"],
        check=True,
    )
    return python


def pg_connect(dbname: str = "postgres") -> Any:
    import psycopg

    return psycopg.connect(f"{PG_BASE}/{dbname}", autocommit=True)


def pg_available() -> str | None:
    try:
        with pg_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def pg_create() -> str:
    name = f"spindle_bench_{uuid.uuid4().hex[:10]}"
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


def pg_settings() -> dict[str, str]:
    with pg_connect() as conn:
        out = {}
        for key in ("server_version", "synchronous_commit", "fsync", "wal_sync_method"):
            out[key] = str(conn.execute(f"SHOW {key}").fetchone()[0])  # type: ignore[index]
    return out


# -- (a) the disk's commit rate -----------------------------------------------------------


def sqlite_commit_rate(tmp: Path, seconds: float) -> float:
    path = tmp / "commit-rate.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
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


# -- (b) workflows ------------------------------------------------------------------------


def run_driver(
    python: Path, driver: Path, impl: str, url: str, mode: str, n: int, warmup: int, threads: int
) -> dict[str, Any]:
    env = dict(os.environ)
    if impl == "spindle":
        env["PYTHONPATH"] = str(ROOT)
    else:
        env.pop("PYTHONPATH", None)
    spec = {"impl": impl, "url": url, "mode": mode, "n": n, "warmup": warmup, "threads": threads}
    proc = subprocess.run(
        [str(python), str(driver), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=driver.parent,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            result: dict[str, Any] = json.loads(line[len("BENCH-RESULT ") :])
            return result
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"exit {proc.returncode}: {tail[:160]}")


def bench_one(
    backend: str,
    impl: str,
    python: Path,
    driver: Path,
    tmp: Path,
    mode: str,
    n: int,
    warmup: int,
    threads: int,
    pg_launch_commits: dict[str, float],
) -> Run:
    run = Run(backend, impl, mode)
    try:
        if backend == "sqlite":
            path = tmp / f"{impl}-{mode}-{uuid.uuid4().hex[:6]}.sqlite"
            res = run_driver(python, driver, impl, f"sqlite:///{path}", mode, n, warmup, threads)
            run.commits_per_wf = res["commits"] / n
            probe = sqlite3.connect(path)
            run.extra["journal_mode"] = probe.execute("PRAGMA journal_mode").fetchone()[0]
            probe.close()
            sync = [p for p in res["pragmas"] if "SYNCHRONOUS" in p.upper()]
            run.extra["synchronous"] = ", ".join(sync) if sync else "default (FULL)"
        else:
            db = pg_create()
            try:
                before = pg_xact_commit(db)
                res = run_driver(python, driver, impl, f"{PG_BASE}/{db}", mode, n, warmup, threads)
                time.sleep(0.5)  # exited backends flush their stats; let them land
                delta = pg_xact_commit(db) - before
            finally:
                pg_drop(db)
            base = pg_launch_commits.get(impl)
            if base is not None:
                run.commits_per_wf = (delta - base) / (n + warmup)
        run.wfps = n / res["elapsed"]
    except Exception as exc:
        run.error = str(exc)
    return run


def pg_launch_only(impl: str, python: Path, driver: Path) -> float | None:
    """Commits a launch + destroy with no workflow makes (subtracted from every run)."""
    db = pg_create()
    try:
        before = pg_xact_commit(db)
        run_driver(python, driver, impl, f"{PG_BASE}/{db}", "none", 0, 0, 4)
        time.sleep(0.5)
        return float(pg_xact_commit(db) - before)
    except Exception:
        return None
    finally:
        pg_drop(db)


# -- (c) the table --------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(runs: list[Run], rates: dict[str, float]) -> None:
    spindle = {(r.backend, r.mode): r.wfps for r in runs if r.impl == "spindle"}
    header = (
        f"{'backend':<9}{'impl':<13}{'mode':<6}{'wf/s':>9}{'spindle/x':>11}"
        f"{'% limit':>9}{'commits/wf':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        if r.error:
            print(f"{r.backend:<9}{r.impl:<13}{r.mode:<6}  could not run: {r.error}")
            continue
        mine = spindle.get((r.backend, r.mode))
        ratio = mine / r.wfps if mine and r.wfps else None
        limit = rates.get(r.backend)
        share = 100 * r.wfps / (limit / MIN_COMMITS) if limit and r.wfps else None
        print(
            f"{r.backend:<9}{r.impl:<13}{r.mode:<6}{fmt(r.wfps, '.0f'):>9}"
            f"{fmt(ratio, '.2f'):>11}{fmt(share, '.0f'):>8}%{fmt(r.commits_per_wf, '.2f'):>12}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--impls", default="spindle," + ",".join(f"dbos-{v}" for v in DBOS_VERSIONS))
    ap.add_argument("--modes", default="seq,conc")
    ap.add_argument("--seq-n", type=int, default=1000, help="workflows called one by one")
    ap.add_argument("--conc-n", type=int, default=500, help="workflows started at once")
    ap.add_argument("--threads", type=int, default=16, help="executor threads (concurrent)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rate-seconds", type=float, default=2.0)
    ap.add_argument("--json", help="also write the results to this file")
    opts = ap.parse_args(argv)
    backends = [b for b in opts.backends.split(",") if b]
    impls = [i for i in opts.impls.split(",") if i]
    modes = [m for m in opts.modes.split(",") if m]

    pg_error = pg_available() if "postgres" in backends else None
    with tempfile.TemporaryDirectory(prefix="spindle-bench-") as tmp_name:
        tmp = Path(tmp_name)
        driver = tmp / "driver.py"
        driver.write_text(DRIVER)
        pythons: dict[str, Path] = {}
        broken: dict[str, str] = {}
        for impl in impls:
            if impl == "spindle":
                pythons[impl] = Path(sys.executable)
            elif impl.startswith("dbos-"):
                try:
                    pythons[impl] = dbos_python(impl[len("dbos-") :])
                except Exception as exc:
                    broken[impl] = f"venv: {exc}"
            else:
                raise SystemExit(f"unknown impl {impl!r}")

        rates: dict[str, float] = {}
        if "sqlite" in backends:
            rates["sqlite"] = sqlite_commit_rate(tmp, opts.rate_seconds)
        if "postgres" in backends and pg_error is None:
            rates["postgres"] = postgres_commit_rate(opts.rate_seconds)

        runs: list[Run] = []
        for backend in backends:
            launch: dict[str, float] = {}
            if backend == "postgres" and pg_error is None:
                for impl, python in pythons.items():
                    base = pg_launch_only(impl, python, driver)
                    if base is not None:
                        launch[impl] = base
            for mode in modes:
                for impl in impls:
                    if backend == "postgres" and pg_error is not None:
                        runs.append(Run(backend, impl, mode, error=f"no PostgreSQL: {pg_error}"))
                        continue
                    if impl in broken:
                        runs.append(Run(backend, impl, mode, error=broken[impl]))
                        continue
                    n = opts.seq_n if mode == "seq" else opts.conc_n
                    run = bench_one(
                        backend,
                        impl,
                        pythons[impl],
                        driver,
                        tmp,
                        mode,
                        n,
                        opts.warmup,
                        opts.threads,
                        launch,
                    )
                    runs.append(run)
                    print(
                        f"bench: {backend} {impl} {mode}: " + (run.error or f"{run.wfps:.0f} wf/s"),
                        file=sys.stderr,
                        flush=True,
                    )

    print()
    print_table(runs, rates)
    print()
    print("settings:")
    for backend, rate in rates.items():
        print(
            f"  {backend} commit rate {rate:.0f} commits/s -> commit limit "
            f"{rate / MIN_COMMITS:.0f} wf/s ({MIN_COMMITS} commits per 3-step workflow)"
        )
    if "sqlite" in rates:
        print("  sqlite commit rate measured with journal_mode=WAL, synchronous=FULL")
        for r in runs:
            if r.backend == "sqlite" and not r.error:
                print(
                    f"  sqlite {r.impl} {r.mode}: journal_mode={r.extra.get('journal_mode')}, "
                    f"synchronous: {r.extra.get('synchronous')}"
                )
    if "postgres" in rates:
        pg = pg_settings()
        print("  postgres " + ", ".join(f"{k}={v}" for k, v in pg.items()))
        print("  postgres commits/wf from pg_stat_database.xact_commit (incl. read-only)")
    print(
        f"  sequential: {opts.seq_n} direct calls; concurrent: {opts.conc_n} start_workflow "
        f"with {opts.threads} executor threads; {opts.warmup} warm-up calls each"
    )
    if opts.json:
        Path(opts.json).write_text(
            json.dumps({"rates": rates, "runs": [r.__dict__ for r in runs]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
