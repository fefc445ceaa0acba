"""The package's exceptions, named as DBOS Transact names them."""

from __future__ import annotations


class DBOSException(Exception):
    """Base class of every error Spindle raises on purpose."""


class DBOSConfigError(DBOSException, ValueError):
    """A configuration key is unknown or has a bad value (raised at construction)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


class DBOSNotLaunchedError(DBOSException, RuntimeError):
    """The call needs ``DBOS.launch()`` first (or came after ``destroy()``)."""


class DBOSSerializationError(DBOSException):
    """A workflow's or step's inputs or output could not be serialized."""


class DBOSNonExistentWorkflowError(DBOSException):
    """No workflow has this ID."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} does not exist")
        self.workflow_id = workflow_id


class DBOSWorkflowConflictIDError(DBOSException):
    """A workflow ID was reused for a different function."""


class DBOSWorkflowCancelledError(DBOSException):
    """Raised inside a workflow that was cancelled (or timed out), at its next step boundary."""


class DBOSAwaitedWorkflowCancelledError(DBOSException):
    """Raised by ``get_result()`` of a workflow that was cancelled or timed out."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} was cancelled")
        self.workflow_id = workflow_id


class DBOSMaxStepRetriesExceeded(DBOSException):
    """A step failed on every one of its allowed attempts."""

    def __init__(self, step_name: str, max_attempts: int, errors: list[BaseException]) -> None:
        super().__init__(
            f"step {step_name!r} failed {max_attempts} times; last error: {errors[-1]!r}"
        )
        self.step_name = step_name
        self.errors = errors


class DBOSMaxRecoveryAttemptsExceededError(DBOSException):
    """A workflow was recovered more times than its ``max_recovery_attempts`` allows."""

    def __init__(self, workflow_id: str, attempts: int) -> None:
        super().__init__(
            f"workflow {workflow_id!r} exceeded its maximum of {attempts} recovery attempts; "
            "it is MAX_RECOVERY_ATTEMPTS_EXCEEDED (resume_workflow runs it again)"
        )
        self.workflow_id = workflow_id


class DBOSWorkflowFunctionNotFoundError(DBOSException):
    """A recovered workflow names a function this process has not registered."""


class DBOSQueueDeduplicatedError(DBOSException):
    """A workflow was enqueued with a deduplication ID already held by an ENQUEUED or PENDING
    workflow of the same queue."""

    def __init__(self, workflow_id: str, queue_name: str, deduplication_id: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} was deduplicated: queue {queue_name!r} already has an "
            f"enqueued or running workflow with deduplication ID {deduplication_id!r}"
        )
        self.workflow_id = workflow_id
        self.queue_name = queue_name
        self.deduplication_id = deduplication_id


class DBOSRuntimeShutdownError(DBOSException):
    """The runtime shut down while the caller was waiting; the workflow stays PENDING."""


class DBOSSystemDatabaseUnavailableError(DBOSException):
    """A client call gave up on the system database after retrying a transient error."""

    def __init__(self, operation: str, attempts: int, seconds: float, cause: str):
        self.operation = operation
        self.attempts = attempts
        #: The last error, named (its driver class and message); also ``__cause__``.
        self.cause = cause
        super().__init__(
            f"the system database did not answer {operation} after {attempts} attempts"
            f" over {seconds:.1f} s: {cause}"
        )


class DBOSDestroyInWorkflowError(DBOSException, RuntimeError):
    """``DBOS.destroy()`` was called from inside a workflow or a step (it did nothing)."""


class WorkflowInterrupted(BaseException):
    """Unwinds a workflow at its next durable boundary when the runtime shuts down.

    A BaseException so a workflow's ``except Exception`` cannot swallow it: the workflow must
    stop touching the database, and stays PENDING for recovery.
    """
