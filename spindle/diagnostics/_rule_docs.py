"""What each ordering rule protects against and what to do when it breaks.

The dashboard serves this at ``/dbos/rules`` (each violation links to its rule there), and
``docs/shutdown-rules.md`` says the same (a test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RuleDoc:
    """The explanation of one rule: why it exists and how to fix a violation."""

    why: str
    fix: str


RULE_DOCS: dict[str, RuleDoc] = {
    "db-closed-while-thread-alive": RuleDoc(
        why="A thread still alive when its database closes runs its next query on a "
        "disposed pool: the query fails, or hangs until a timeout. This is the ordering "
        "bug the design calls 'the PR #553 bug': databases closed before the threads that "
        "use them were joined. The rule catches that order coming back.",
        fix="Close the databases only after every thread that may use them was joined; "
        "see which thread was alive in the violation's stack.",
    ),
    "pollers-not-signalled-first": RuleDoc(
        why="Pollers (cron threads, event receivers, schedulers) start workflows. Stopping "
        "the internal threads first leaves a poller able to start a workflow that nothing "
        "is left to run or to time out.",
        fix="Set every poller's stop event before any internal one (phase 1 before 2).",
    ),
    "spawn-after-shutdown-began": RuleDoc(
        why="A thread made after phase 1 was never in the set of threads shutdown signals "
        "and joins, so it may outlive the databases. The stack shown is the spawner's: the "
        "code that made the thread.",
        fix="Close whatever spawns threads (poller gate, queue manager) in a prepare step, "
        "before phase 1; never spawn from a stop-event callback.",
    ),
    "join-before-db-interrupt": RuleDoc(
        why="A thread blocked in a database call does not see its stop event. Joining it "
        "before the blocking calls are interrupted makes the join wait out its whole "
        "timeout.",
        fix="Interrupt blocking database calls (interrupt_db) before join_threads.",
    ),
    "thread-not-joined-before-db-close": RuleDoc(
        why="A thread that exited but was never joined may still be unwinding (finally "
        "blocks, connection returns) when the database closes.",
        fix="Join every thread, even those that already exited, before close_databases.",
    ),
    "stop-event-never-set": RuleDoc(
        why="A thread whose stop event is never set only stops with the process: at best "
        "its join times out, at worst it runs against closed resources.",
        fix="Register every thread through the supervisor so a phase signals its group.",
    ),
    "join-timeout": RuleDoc(
        why="A thread outlived its join timeout. A supervised thread ignored its stop event "
        "or is blocked in a call the stop event cannot wake; an executor worker (which has "
        "no stop event) is still inside a workflow's step that has not returned. The "
        "violation names the workflow and step, and the stack shows where it is.",
        fix="Make the blocking call interruptible (a timeout, a stop-event callback that "
        "closes its socket), or raise thread_join_timeout_sec if the work is legitimately "
        "long.",
    ),
    "conductor-stopped-before-drain": RuleDoc(
        why="A conductor manages the app remotely and watches its workflows. Stopped before "
        "the workflow drain ended, it loses sight of the last workflows as they finish or "
        "are interrupted, and a fleet view shows them as running forever (DBOS issue #824 "
        "asked for the conductor to outlive the drain).",
        fix="Stop the conductor connection in stop_conductor, after wait_workflows; never "
        "signal its thread from an earlier phase.",
    ),
    "phases-out-of-order": RuleDoc(
        why="Each rule above relies on the phases running once each, in the planned order.",
        fix="Run destroy() once; do not reorder or skip the phase specs.",
    ),
}
