"""Does the suite catch these one-line regressions? A mutation check you can rerun.

Each mutation replaces one exact piece of one line of the package with a plausible bug
(a hard-coded timeout, a dropped backoff, ``|safe`` on a template, an off-by-one). For each,
a scratch copy of the tree gets that one change and pytest runs only the test files that
should notice it; the mutation is *caught* when they fail. Nothing here runs in the default
test run: it takes minutes.

    .venv/bin/python .ci/mutations.py                    # every mutation, this tree's tests
    .venv/bin/python .ci/mutations.py --only resume-noop # one of them
    .venv/bin/python .ci/mutations.py --tests-from DIR   # the package here, DIR's tests/
                                                         # (e.g. an older suite: before/after)
    .venv/bin/python .ci/mutations.py --list

Keep the list current as modules move: a mutation whose text is not found exactly once in
its file is reported as STALE and makes the run fail, so a refactor cannot silently turn a
mutation into a no-op. Exit status: 0 when every mutation is caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Per-test timeout inside a mutated run: a mutation that makes something hang is caught
#: by the test that hangs, in this many seconds, not by the outer limit.
TEST_TIMEOUT_SEC = 60
RUN_LIMIT_SEC = 900


@dataclass(frozen=True)
class Mutation:
    """``old`` (found exactly once in ``path``) becomes ``new``; ``tests`` should notice."""

    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


R = "tests/runtime/"
W = "tests/web/"

MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "join-timeout-fixed",
        "spindle/runtime/_shutdown.py",
        "join_timeout = rt.config.thread_join_timeout_sec",
        "join_timeout = 10.0",
        (R + "test_join_timeout.py", R + "test_lifecycle.py"),
        "shutdown joins for 10 s whatever thread_join_timeout_sec says",
    ),
    Mutation(
        "step-backoff-removed",
        "spindle/runtime/_durable.py",
        "info.interval_seconds * info.backoff_rate**i",
        "info.interval_seconds",
        (R + "test_step_backoff.py", R + "test_workflows.py", R + "test_durable.py"),
        "every retry waits interval_seconds: backoff_rate ignored",
    ),
    Mutation(
        "step-retries-one-more",
        "spindle/runtime/_durable.py",
        "for i in range(info.max_attempts - 1)]",
        "for i in range(info.max_attempts)]",
        (R + "test_step_backoff.py", R + "test_workflows.py", R + "test_durable.py"),
        "a step is tried max_attempts + 1 times",
    ),
    Mutation(
        "history-label-safe",
        "spindle/web/templates/_svg.html",
        '{{ r.label|truncate(38, True, "…") }}',
        '{{ r.label|truncate(38, True, "…")|safe }}',
        (W + "test_escaping.py", W + "test_history.py", W + "test_threads.py"),
        "the /history (and shutdown) SVG row label is not escaped",
    ),
    Mutation(
        "violation-names-safe",
        "spindle/web/templates/shutdown.html",
        '{{ v.thread_names|join(", ") }}',
        '{{ v.thread_names|map("safe")|join(", ") }}',
        (W + "test_escaping.py", W + "test_shutdown.py", W + "test_offline.py"),
        "violation thread names on /shutdown are not escaped",
    ),
    Mutation(
        "status-note-safe",
        "spindle/web/templates/thread.html",
        '{{ i.status_note or "" }}',
        '{{ (i.status_note or "")|safe }}',
        (W + "test_escaping.py", W + "test_thread_detail.py"),
        "a thread's status note is not escaped on its page",
    ),
    Mutation(
        "pyspy-name-safe",
        "spindle/web/templates/_pyspy.html",
        "{{ t.name or d.info.name }}",
        "{{ (t.name or d.info.name)|safe }}",
        (W + "test_escaping.py", W + "test_thread_detail.py"),
        "the thread named in a py-spy dump is not escaped",
    ),
    Mutation(
        "resume-noop",
        "spindle/runtime/_workflows.py",
        "    return restart(rt, workflow_id, count_attempt=False)",
        "    return handle(rt, workflow_id)",
        (R + "test_resume.py", R + "test_lifecycle.py", R + "test_workflows.py"),
        "resume_workflow marks the row PENDING and returns a handle; nothing runs",
    ),
    Mutation(
        "queue-concurrency-plus-one",
        "spindle/runtime/_queue_db.py",
        "budget = min(budget, queue.concurrency - int(total))",
        "budget = min(budget, queue.concurrency + 1 - int(total))",
        (R + "test_queue_overlap.py", R + "test_queues.py"),
        "a queue runs one more workflow than its concurrency",
    ),
    Mutation(
        "queue-worker-concurrency-plus-one",
        "spindle/runtime/_queue_db.py",
        "budget = min(budget, queue.worker_concurrency - int(own))",
        "budget = min(budget, queue.worker_concurrency + 1 - int(own))",
        (R + "test_queue_overlap.py", R + "test_queues.py"),
        "a process runs one more workflow than worker_concurrency",
    ),
    Mutation(
        "gc-ties-kept",
        "spindle/runtime/_admin_db.py",
        "ws.c.workflow_uuid <= edge.workflow_uuid",
        "ws.c.workflow_uuid < edge.workflow_uuid",
        (R + "test_garbage_collect.py", R + "test_admin.py"),
        "GC by row count keeps a tied row beyond the newest N",
    ),
    Mutation(
        "gc-ties-deleted",
        "spindle/runtime/_admin_db.py",
        "ws.c.created_at < edge.created_at,",
        "ws.c.created_at <= edge.created_at,",
        (R + "test_garbage_collect.py", R + "test_admin.py"),
        "GC by row count deletes every row tied with the first one beyond N (the old bug)",
    ),
    Mutation(
        "admin-cancel-noop",
        "spindle/runtime/_admin_api.py",
        "run_in_threadpool(_management.cancel, rt,",
        "run_in_threadpool(lambda *_: None, rt,",
        (R + "test_admin_effects.py", R + "test_admin.py"),
        "POST /workflows/{id}/cancel answers 204 and cancels nothing",
    ),
    Mutation(
        "admin-resume-noop",
        "spindle/runtime/_admin_api.py",
        "run_in_threadpool(_management.resume, rt,",
        "run_in_threadpool(lambda *_: None, rt,",
        (R + "test_admin_effects.py", R + "test_admin.py"),
        "POST /workflows/{id}/resume answers 204 and resumes nothing",
    ),
    Mutation(
        "admin-recovery-noop",
        "spindle/runtime/_admin_api.py",
        "handles = await run_in_threadpool(_workflows.recover_pending, rt, call.body)",
        "handles: list[Any] = []",
        (R + "test_admin_effects.py", R + "test_admin.py"),
        "POST /dbos-workflow-recovery recovers nothing",
    ),
    Mutation(
        "admin-restart-skips-step-1",
        "spindle/runtime/_management.py",
        "return fork(rt, workflow_id, 1)",
        "return fork(rt, workflow_id, 2)",
        (R + "test_admin_effects.py", R + "test_admin.py"),
        "POST /workflows/{id}/restart keeps step 1's recorded output instead of rerunning it",
    ),
    Mutation(
        "admin-deactivate-noop",
        "spindle/runtime/_admin_api.py",
        "        rt.supervisor.signal(ThreadGroup.POLLER)\n",
        "        pass\n",
        (R + "test_admin_effects.py", R + "test_admin.py"),
        "GET /deactivate stops no poller",
    ),
    Mutation(
        "sqlite-synchronous-ignored",
        "spindle/runtime/_sysdb_engine.py",
        'cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")',
        'cur.execute("PRAGMA synchronous=FULL")',
        (R + "test_config_keys.py", R + "test_sysdb.py"),
        "the sqlite_synchronous key is accepted and ignored",
    ),
    Mutation(
        "admin-host-ignored",
        "spindle/runtime/_lifecycle.py",
        "        cfg.admin_host,\n",
        '        "127.0.0.1",\n',
        (R + "test_config_keys.py", R + "test_admin.py"),
        "the admin server binds 127.0.0.1 whatever admin_host says",
    ),
    Mutation(
        "dbos-vmid-ignored",
        "spindle/runtime/_config.py",
        'values["executor_id"] = os.environ["DBOS__VMID"]',
        'values["executor_id"] = "local"',
        (R + "test_config_keys.py", R + "test_recovery.py"),
        "DBOS__VMID no longer names the executor",
    ),
    Mutation(
        "tx-replay-skips-record",
        "spindle/runtime/_tx_op.py",
        "    if ctx.recorded is not None:",
        "    if False:",
        (R + "test_datasource_async.py",),
        "a recovered workflow never reads datasource_outputs: a commit before a crash reruns",
    ),
    Mutation(
        "tx-retries-any-error-outside-workflows",
        "spindle/runtime/_tx_op.py",
        "            if not is_rollback(exc):",
        "            if not is_transient(exc):",
        (R + "test_datasource.py",),
        "outside a workflow a lost connection (commit maybe landed) is run again",
    ),
    Mutation(
        "fork-reruns-children",
        "spindle/runtime/_core.py",
        "    started = _recorded_child(parent, child_fid)",
        "    started = None",
        (R + "test_step_listing.py",),
        "a replay ignores a child's recorded start: a fork past a child runs it again",
    ),
    Mutation(
        "child-start-unlisted",
        "spindle/runtime/_core.py",
        "    if parent is None or fid is None or parent.in_step:",
        "    if True:",
        (R + "test_step_listing.py",),
        "a child's start is not a step of its parent (list_workflow_steps, fork)",
    ),
    Mutation(
        "transaction-not-a-step",
        "spindle/runtime/_tx_op.py",
        "    return conclude(rt, ctx, fid, name, done.value, done.error, started_at=started_at)",
        "    return done.result()",
        (R + "test_datasource.py", R + "test_step_listing.py"),
        "a transaction (datasource or @DBOS.transaction) is not recorded as the workflow's step",
    ),
    Mutation(
        "enqueued-handle-trusts-stale",
        "spindle/runtime/_handles.py",
        "read = mark is None or mark != active.forgotten",
        "read = mark is None",
        (R + "test_queues.py",),
        "an enqueued handle waits out a poll delay for a workflow that already failed here",
    ),
    Mutation(
        "dequeue-index-unordered",
        "spindle/runtime/_schema.py",
        "    workflow_status.c.created_at,\n    workflow_status.c.enqueue_seq,\n",
        "",
        (R + "test_scale_indexes.py",),
        "the queue index lacks the dequeue's order: a dequeue walks every finished workflow",
    ),
    Mutation(
        "waiter-runs-dequeued",
        "spindle/runtime/_handles.py",
        "return not entry.dequeued or rt.sysdb.sqlite or current_workflow.get() is not None",
        "return True",
        (R + "test_queued_handle.py",),
        "on PostgreSQL a client waiting on its handle runs a dequeued workflow beside the executor",
    ),
    Mutation(
        "parent-never-rechecks-runner",
        "spindle/runtime/_handles.py",
        "            if may_run:\n                delay = min(delay * 2, 1.0)\n",
        "            may_run = False\n",
        (R + "test_queued_handle.py",),
        "a parent that found its queued child without a runner never looks again",
    ),
    Mutation(
        "dequeue-sorts-backlog",
        "spindle/runtime/_queue_db.py",
        'order = f"created_at, {seq}"\n    template',
        'order = f"created_at, {seq}, workflow_uuid"\n    template',
        (R + "test_scale_indexes.py",),
        "the dequeue's order is not the index's: stale statistics make it sort the backlog",
    ),
    Mutation(
        "datasource-savepoint-join",
        "spindle/runtime/_datasource.py",
        'checkpoint, "rollback_only"))',
        'checkpoint, "create_savepoint"))',
        (R + "test_datasource.py",),
        "on pysqlite the SAVEPOINT's release commits the writes before their checkpoint",
    ),
    Mutation(
        "tx-isolation-ignored",
        "spindle/runtime/_sql_tx.py",
        "if isolation_level is None or sqlite:",
        "if True:",
        (R + "test_datasource.py",),
        "every transaction runs at the database's default isolation level",
    ),
)


def copy_tree(src: Path, dest: Path, tests_from: Path | None) -> None:
    """The package, the tests (from ``tests_from`` when given), pyproject and the files tests
    read (docs/, dashboards/), into ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite*")
    shutil.copytree(src / "spindle", dest / "spindle", ignore=ignore)
    shutil.copytree((tests_from or src) / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(src / "pyproject.toml", dest / "pyproject.toml")
    # Tests check the docs against the code (the rule pages) and the dashboards against
    # /metrics: without them the unmutated baseline fails and no mutation means anything.
    for folder in ("docs", "dashboards"):
        if (src / folder).is_dir():
            shutil.copytree(src / folder, dest / folder, ignore=ignore)


def apply(tree: Path, m: Mutation) -> str | None:
    """Make the change; returns the original text, or None when the mutation is stale."""
    path = tree / m.path
    if not path.is_file():
        return None
    text = path.read_text()
    if text.count(m.old) != 1:
        return None
    path.write_text(text.replace(m.old, m.new))
    return text


def run_tests(tree: Path, tests: list[str]) -> tuple[int | None, float, str]:
    """pytest over ``tests`` in ``tree``: (exit status or None on the outer limit, s, tail)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    # The scratch copy shadows the editable install of the repo's own package.
    env["PYTHONPATH"] = str(tree)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--timeout={TEST_TIMEOUT_SEC}",
        *tests,
    ]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=RUN_LIMIT_SEC
        )
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - start, "hung past the outer limit"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, time.monotonic() - start, lines[-1] if lines else ""


def check_shadowing(tree: Path) -> None:
    """Fail loudly if the scratch copy is not the package pytest would import."""
    out = subprocess.run(
        [sys.executable, "-c", "import spindle; print(spindle.__file__)"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"mutations: the scratch copy is not imported ({out}); aborting")


def main(argv: list[str] | None = None) -> int:
    """Run the mutations; print a markdown table; 0 when every one is caught."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="mutation ids to run (default: all)")
    parser.add_argument("--tests-from", type=Path, help="a tree whose tests/ to use")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only]
    if args.list or not chosen:
        for m in MUTATIONS:
            print(f"{m.id:36} {m.path}: {m.why}")
        return 0 if args.list else 2

    with tempfile.TemporaryDirectory(prefix="spindle-mutations-") as tmp:
        tree = Path(tmp)
        copy_tree(ROOT, tree, args.tests_from)
        check_shadowing(tree)
        if not args.no_baseline:
            files = sorted({t for m in chosen for t in m.tests if (tree / t).is_file()})
            status, seconds, tail = run_tests(tree, files)
            print(f"baseline (no mutation): {len(files)} files, {seconds:.0f} s: {tail}")
            if status != 0:
                print("mutations: the unmutated suite is not green; results would mean nothing")
                return 2
        rows = []
        for m in chosen:
            original = apply(tree, m)
            if original is None:
                rows.append((m, "STALE (text not found once)", 0.0, ""))
                continue
            try:
                tests = [t for t in m.tests if (tree / t).is_file()]
                if not tests:
                    rows.append((m, "survived (no test file)", 0.0, ""))
                    continue
                status, seconds, tail = run_tests(tree, tests)
            finally:
                (tree / m.path).write_text(original)
            if status is None:
                result = "hung"
            else:
                result = {0: "survived", 1: "caught"}.get(status, f"error (exit {status})")
            rows.append((m, result, seconds, tail))
            print(f"{m.id}: {result} ({seconds:.0f} s) {tail}", flush=True)

    print()
    print("| mutation | what it breaks | result | time |")
    print("|---|---|---|---|")
    for m, result, seconds, _ in rows:
        print(f"| `{m.id}` | {m.why} | {result} | {seconds:.0f} s |")
    caught = sum(1 for _, r, _, _ in rows if r == "caught")
    print(f"\n{caught} of {len(rows)} mutations caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
