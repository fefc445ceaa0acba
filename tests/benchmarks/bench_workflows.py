"""Workflow throughput: Spindle against DBOS Transact, measured against the disk's commit rate.

Run on demand (``./run bench`` runs it through ``test_workflow_throughput``; fails if a row
could not run):

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
import shlex
import shutil
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
HERE = Path(__file__).resolve().parent
VENVS = ROOT / ".bench-venvs"
DBOS_VERSIONS = ("2.30.0", "3.4.0")
PG_BASE = os.environ.get("SPINDLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
STEPS = 3
#: Where each Spindle implementation is imported from ("spindle-base": --baseline).
SPINDLE_TREES: dict[str, Path] = {"spindle": ROOT}
MIN_COMMITS = STEPS + 2  # the status insert, one per step, the final update

DRIVER = textwrap.dedent(
    '''
    """Bench driver: one implementation, one backend, one mode; prints one JSON line."""
    import json
    import sqlite3
    import sys
    import time

    import sqlite_commits  # copied beside this driver

    args = json.loads(sys.argv[1])
    sqlite_commits.install()
    commits = sqlite_commits.commits
    pragmas = sqlite_commits.pragmas


    if args["impl"].startswith("spindle"):
        import spindle as measured
        from spindle import DBOS

        config = {"name": "bench", "system_database_url": args["url"],
                  "run_admin_server": False, "max_executor_threads": args["threads"]}
    else:
        import dbos as measured
        from dbos import DBOS

        config = {"name": "bench", "system_database_url": args["url"],
                  "max_executor_threads": args["threads"]}
    # Which package this process really imported (its version and where from).
    sqlite_commits.report_measured(measured)

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


    class Probe:
        """Durable single-row autocommit inserts on a database of the bench's own."""

        def __init__(self, spec):
            if spec["kind"] == "sqlite":
                self.conn = sqlite3.connect(spec["path"], isolation_level=None)
                self.conn.execute("PRAGMA synchronous=FULL")
                self.sql = "INSERT INTO t (v) VALUES (?)"
            else:
                import psycopg

                self.conn = psycopg.connect(spec["url"], autocommit=True)
                self.sql = "INSERT INTO t (v) VALUES (%s)"
            self.n, self.t = 0, 0.0

        def slice(self, seconds):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                self.conn.execute(self.sql, ("x" * 32,))
                self.n += 1
            self.t += time.perf_counter() - t0


    DBOS.launch()
    n, mode, batch = args["n"], args["mode"], max(1, args.get("batch", 1))
    probe = Probe(args["probe"]) if args.get("probe") else None
    for i in range(args["warmup"]):
        assert three_steps(i) == i + 3
    c0 = commits[0]
    elapsed = 0.0
    # Batches of workflows alternate with short commit-rate probes, so both see the same
    # disk: its rate drifts on a shared machine. Only the batches are timed.
    done = 0
    while done < n:
        todo = range(done, min(n, done + batch))
        t0 = time.perf_counter()
        if mode == "seq":
            for i in todo:
                assert three_steps(i) == i + 3
        else:
            handles = [DBOS.start_workflow(three_steps, i) for i in todo]
            for i, h in zip(todo, handles):
                assert h.get_result() == i + 3
        elapsed += time.perf_counter() - t0
        done += len(todo)
        if probe is not None:
            probe.slice(args["probe_slice"])
    c1 = commits[0]
    DBOS.destroy()
    print("BENCH-RESULT " + json.dumps({
        "elapsed": elapsed, "n": n, "commits": c1 - c0, "pragmas": sorted(set(pragmas)),
        "measured": sqlite_commits.measured_of(measured),
        "probe_rate": probe.n / probe.t if probe is not None and probe.t else None,
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
    commit_rate: float | None = None
    measured: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def share(self) -> float | None:
        """Workflows/s as a percentage of the commit limit (commit rate / 5)."""
        if self.wfps is None or not self.commit_rate:
            return None
        return 100 * self.wfps / (self.commit_rate / MIN_COMMITS)


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


class CommitProbe:
    """Single-row durable autocommit inserts on one backend: the disk's commit rate.

    The disk is shared and its rate drifts within seconds, so the drivers also probe
    it themselves (``spec``), in short slices between their batches of workflows: each
    row's limit is the rate measured while its workflows ran.
    """

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self.pg_db: str | None = None
        self.conn: Any
        if backend == "sqlite":
            path = tmp / "commit-rate.sqlite"
            self.spec: dict[str, Any] = {"kind": "sqlite", "path": str(path)}
            self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.sql = "INSERT INTO t (v) VALUES (?)"
            self.conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        else:
            self.pg_db = pg_create()
            self.spec = {"kind": "postgres", "url": f"{PG_BASE}/{self.pg_db}"}
            self.conn = pg_connect(self.pg_db)
            self.sql = "INSERT INTO t (v) VALUES (%s)"
            self.conn.execute("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
        self.samples: list[float] = []

    def measure(self, seconds: float) -> float:
        n = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            self.conn.execute(self.sql, ("x" * 32,))
            n += 1
        rate = n / elapsed
        self.samples.append(rate)
        return rate

    def close(self) -> None:
        self.conn.close()
        if self.pg_db is not None:
            pg_drop(self.pg_db)


# -- (b) workflows ------------------------------------------------------------------------


def run_driver(
    python: Path,
    driver: Path,
    impl: str,
    url: str,
    mode: str,
    n: int,
    warmup: int,
    threads: int,
    **extra: Any,
) -> dict[str, Any]:
    env = dict(os.environ)
    if impl.startswith("spindle"):
        env["PYTHONPATH"] = str(SPINDLE_TREES.get(impl, ROOT))
    else:
        env.pop("PYTHONPATH", None)
    spec = {"impl": impl, "url": url, "mode": mode, "n": n, "warmup": warmup, "threads": threads}
    spec.update(extra)
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


@dataclass
class Bench:
    tmp: Path
    driver: Path
    warmup: int
    threads: int
    probe_slice: float
    seq_batch: int
    conc_batch: int
    probes: dict[str, CommitProbe] = field(default_factory=dict)
    pg_launch_commits: dict[str, float] = field(default_factory=dict)

    def one(self, backend: str, impl: str, python: Path, mode: str, n: int) -> Run:
        run = Run(backend, impl, mode)
        probe = self.probes[backend]
        extra = {
            "probe": probe.spec,
            "probe_slice": self.probe_slice,
            "batch": self.seq_batch if mode == "seq" else self.conc_batch,
        }
        try:
            if backend == "sqlite":
                path = self.tmp / f"{impl}-{mode}-{uuid.uuid4().hex[:6]}.sqlite"
                res = run_driver(
                    python,
                    self.driver,
                    impl,
                    f"sqlite:///{path}",
                    mode,
                    n,
                    self.warmup,
                    self.threads,
                    **extra,
                )
                run.commits_per_wf = res["commits"] / n
                check = sqlite3.connect(path)
                run.extra["journal_mode"] = check.execute("PRAGMA journal_mode").fetchone()[0]
                check.close()
                sync = [p for p in res["pragmas"] if "SYNCHRONOUS" in p.upper()]
                run.extra["synchronous"] = ", ".join(sync) if sync else "default (FULL)"
            else:
                db = pg_create()
                try:
                    first = pg_xact_commit(db)
                    res = run_driver(
                        python,
                        self.driver,
                        impl,
                        f"{PG_BASE}/{db}",
                        mode,
                        n,
                        self.warmup,
                        self.threads,
                        **extra,
                    )
                    time.sleep(0.5)  # exited backends flush their stats; let them land
                    delta = pg_xact_commit(db) - first
                finally:
                    pg_drop(db)
                base = self.pg_launch_commits.get(impl)
                if base is not None:
                    run.commits_per_wf = (delta - base) / (n + self.warmup)
            run.wfps = n / res["elapsed"]
            run.measured = res.get("measured")
            run.commit_rate = res["probe_rate"]
            if run.commit_rate:
                probe.samples.append(run.commit_rate)
        except Exception as exc:
            run.error = str(exc)
        return run

    def pg_launch_only(self, impl: str, python: Path) -> float | None:
        """Commits a launch + destroy with no workflow makes (subtracted from every run)."""
        db = pg_create()
        try:
            first = pg_xact_commit(db)
            run_driver(python, self.driver, impl, f"{PG_BASE}/{db}", "none", 0, 0, 4)
            time.sleep(0.5)
            return float(pg_xact_commit(db) - first)
        except Exception:
            return None
        finally:
            pg_drop(db)


def median_run(runs: list[Run]) -> Run:
    """The repetition with the median share of the commit limit (or the first failure)."""
    ok = [r for r in runs if r.error is None and r.share is not None]
    if not ok:
        return runs[0]
    ok.sort(key=lambda r: r.share or 0.0)
    return ok[len(ok) // 2]


# -- (c) the table --------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(runs: list[Run]) -> None:
    spindle = {(r.backend, r.mode): r.share for r in runs if r.impl == "spindle"}
    header = (
        f"{'backend':<9}{'impl':<13}{'mode':<6}{'wf/s':>7}{'commit/s':>10}{'limit':>7}"
        f"{'% limit':>9}{'spindle/x':>11}{'commits/wf':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        if r.error:
            print(f"{r.backend:<9}{r.impl:<13}{r.mode:<6}  could not run: {r.error}")
            continue
        mine = spindle.get((r.backend, r.mode))
        ratio = mine / r.share if mine and r.share else None
        limit = r.commit_rate / MIN_COMMITS if r.commit_rate else None
        print(
            f"{r.backend:<9}{r.impl:<13}{r.mode:<6}{fmt(r.wfps, '.0f'):>7}"
            f"{fmt(r.commit_rate, '.0f'):>10}{fmt(limit, '.0f'):>7}"
            f"{fmt(r.share, '.0f'):>8}%{fmt(ratio, '.2f'):>11}{fmt(r.commits_per_wf, '.2f'):>12}"
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
    ap.add_argument("--repeat", type=int, default=1, help="runs of each row; the median is shown")
    ap.add_argument("--probe-seconds", type=float, default=2.0, help="the first commit probe")
    ap.add_argument(
        "--probe-slice", type=float, default=0.1, help="each commit probe between batches"
    )
    ap.add_argument("--seq-batch", type=int, default=25, help="sequential workflows per batch")
    ap.add_argument("--conc-batch", type=int, default=100, help="started workflows per batch")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument(
        "--baseline",
        metavar="TREE",
        help="also run the Spindle checked out at TREE (e.g. a worktree of main) as "
        "'spindle-base', for before/after figures",
    )
    opts = ap.parse_args(argv)
    if opts.baseline:
        SPINDLE_TREES["spindle-base"] = Path(opts.baseline).resolve()
        if "spindle-base" not in opts.impls:
            opts.impls = "spindle-base," + opts.impls
    backends = [b for b in opts.backends.split(",") if b]
    impls = [i for i in opts.impls.split(",") if i]
    modes = [m for m in opts.modes.split(",") if m]

    pg_error = pg_available() if "postgres" in backends else None
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="spindle-bench-") as tmp_name:
        tmp = Path(tmp_name)
        driver = tmp / "driver.py"
        driver.write_text(DRIVER)
        shutil.copy(HERE / "_sqlite_commits.py", tmp / "sqlite_commits.py")
        pythons: dict[str, Path] = {}
        broken: dict[str, str] = {}
        for impl in impls:
            if impl in SPINDLE_TREES:
                pythons[impl] = Path(sys.executable)
            elif impl.startswith("dbos-"):
                try:
                    pythons[impl] = dbos_python(impl[len("dbos-") :])
                except Exception as exc:
                    broken[impl] = f"venv: {exc}"
            else:
                raise SystemExit(f"unknown impl {impl!r}")

        bench = Bench(
            tmp,
            driver,
            opts.warmup,
            opts.threads,
            opts.probe_slice,
            opts.seq_batch,
            opts.conc_batch,
        )
        try:
            for backend in backends:
                if backend == "postgres" and pg_error is not None:
                    runs += [
                        Run(backend, i, m, error=f"no PostgreSQL: {pg_error}")
                        for m in modes
                        for i in impls
                    ]
                    continue
                bench.probes[backend] = CommitProbe(backend, tmp)
                bench.probes[backend].measure(opts.probe_seconds)
                if backend == "postgres":
                    for impl, python in pythons.items():
                        base = bench.pg_launch_only(impl, python)
                        if base is not None:
                            bench.pg_launch_commits[impl] = base
                for mode in modes:
                    for impl in impls:
                        if impl in broken:
                            runs.append(Run(backend, impl, mode, error=broken[impl]))
                            continue
                        n = opts.seq_n if mode == "seq" else opts.conc_n
                        reps = [
                            bench.one(backend, impl, pythons[impl], mode, n)
                            for _ in range(opts.repeat)
                        ]
                        run = median_run(reps)
                        runs.append(run)
                        print(
                            f"bench: {backend} {impl} {mode}: "
                            + (
                                run.error
                                or ", ".join(
                                    f"{r.wfps or 0:.0f} wf/s {r.share or 0:.0f}%" for r in reps
                                )
                            ),
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            for probe in bench.probes.values():
                probe.close()

    print()
    print_table(runs)
    print()
    print("settings and method:")
    print(
        f"  commit/s: the disk's durable commit rate (single-row autocommit inserts), probed "
        f"by the driver for {opts.probe_slice:g} s after every batch of workflows "
        f"({opts.seq_batch} sequential / {opts.conc_batch} concurrent), so both see the same "
        f"disk; wf/s times the batches only; limit = commit/s / {MIN_COMMITS} (the commits "
        f"a 3-step workflow needs at least)"
    )
    print(
        "  spindle/x: Spindle's % of the limit over this row's (rates normalised by the "
        "disk's rate at the time, which drifts on a shared machine)"
    )
    if "sqlite" in bench.probes:
        rates = bench.probes["sqlite"].samples
        print(
            f"  sqlite probes: journal_mode=WAL, synchronous=FULL; "
            f"{min(rates):.0f}-{max(rates):.0f} commits/s over the run"
        )
        for r in runs:
            if r.backend == "sqlite" and not r.error:
                print(
                    f"  sqlite {r.impl} {r.mode}: journal_mode={r.extra.get('journal_mode')}, "
                    f"synchronous: {r.extra.get('synchronous')}"
                )
        print("  sqlite commits/wf: commits of transactions that wrote, seen by a trace callback")
    if "postgres" in bench.probes:
        rates = bench.probes["postgres"].samples
        pg = pg_settings()
        print(
            "  postgres "
            + ", ".join(f"{k}={v}" for k, v in pg.items())
            + f"; probes {min(rates):.0f}-{max(rates):.0f} commits/s over the run"
        )
        print(
            "  postgres commits/wf: pg_stat_database.xact_commit delta less a launch-only "
            "run's (includes read-only transactions)"
        )
    print(
        f"  sequential: {opts.seq_n} direct calls; concurrent: {opts.conc_n} start_workflow "
        f"with {opts.threads} executor threads; {opts.warmup} warm-up calls each; "
        f"median of {opts.repeat} run(s)"
    )
    print_measured(runs)
    if opts.json:
        Path(opts.json).write_text(json.dumps([r.__dict__ for r in runs], indent=2))
    return report_failures(f"{r.backend} {r.impl} {r.mode}" for r in runs if r.error)


def print_measured(runs: list[Run]) -> None:
    """The package each row imported: a row is a figure for that version, no other."""
    seen = {(r.impl, r.measured) for r in runs if r.measured}
    for impl, measured in sorted(seen):
        print(f"  measured {impl}: {measured}")


def report_failures(failed: Any) -> int:
    """0 when every row ran; else 1, naming the rows (a row that could not run is a failure,
    not a table with holes that passes)."""
    rows = list(failed)
    if rows:
        print(f"bench: {len(rows)} row(s) could not run: {'; '.join(rows)}", file=sys.stderr)
    return 1 if rows else 0


def test_workflow_throughput() -> None:
    """``./run bench`` (pytest -s): the whole comparison, printed; fails if a row could not
    run (no PostgreSQL, a dbos venv that would not install, a driver that crashed).

    SPINDLE_BENCH_WORKFLOWS_ARGS passes options, e.g. ``--impls spindle --repeat 3``.
    """
    assert main(shlex.split(os.environ.get("SPINDLE_BENCH_WORKFLOWS_ARGS", ""))) == 0


if __name__ == "__main__":
    raise SystemExit(main())
