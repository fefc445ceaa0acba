"""The package's exceptions, named, numbered and worded as DBOS Transact 2.30's.

Code written for DBOS catches these classes and matches their text (``str(e)`` is
``DBOS Error <code>: <message>`` as in DBOS). Each class with constructor arguments also
says how to rebuild itself (``__reduce__``): a workflow's error is pickled into the system
database and must come back as the same class with the same fields.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class DBOSErrorCode(Enum):
    """DBOS's error codes (``DBOSException.dbos_error_code`` holds the value)."""

    ConflictingIDError = 1
    RecoveryError = 2
    InitializationError = 3
    WorkflowFunctionNotFound = 4
    NonExistentWorkflowError = 5
    MaxRecoveryAttemptsExceeded = 6
    MaxStepRetriesExceeded = 7
    NotAuthorized = 8
    ConflictingWorkflowError = 9
    WorkflowCancelled = 10
    UnexpectedStep = 11
    QueueDeduplicated = 12
    AwaitedWorkflowCancelled = 13
    AwaitedWorkflowMaxRecoveryAttemptsExceeded = 14
    PatchNondeterminism = 15
    ConflictingRegistrationError = 25


def _text(self: DBOSException | DBOSBaseException) -> str:
    if self.dbos_error_code:
        return f"DBOS Error {self.dbos_error_code}: {self.message}"
    return f"DBOS Error: {self.message}"


class DBOSException(Exception):
    """Base class of every error Spindle raises on purpose."""

    def __init__(self, message: str, dbos_error_code: int | None = None) -> None:
        self.message = message
        self.dbos_error_code = dbos_error_code
        self.status_code: int | None = None
        super().__init__(message)

    def __str__(self) -> str:
        return _text(self)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.dbos_error_code))


class DBOSBaseException(BaseException):
    """A DBOS error user code must not catch by accident (``except Exception`` misses it)."""

    def __init__(self, message: str, dbos_error_code: int | None = None) -> None:
        self.message = message
        self.dbos_error_code = dbos_error_code
        self.status_code: int | None = None
        super().__init__(message)

    def __str__(self) -> str:
        return _text(self)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.dbos_error_code))


class DBOSConfigError(DBOSException, ValueError):
    """A configuration key is unknown or has a bad value (raised at construction)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key
        self.detail = message

    def __reduce__(self) -> Any:
        return (type(self), (self.key, self.detail))


class DBOSInitializationError(DBOSException):
    """DBOS could not initialise (DBOS's class; Spindle raises it for a misuse at start)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"Error initializing DBOS Transact: {message}",
            DBOSErrorCode.InitializationError.value,
        )
        self.detail = message

    def __reduce__(self) -> Any:
        return (type(self), (self.detail,))


class DBOSNotLaunchedError(DBOSException, RuntimeError):
    """The call needs ``DBOS.launch()`` first (or came after ``destroy()``)."""


class DBOSSerializationError(DBOSException):
    """A workflow's or step's inputs or output could not be serialized."""


class DBOSNonExistentWorkflowError(DBOSException):
    """No workflow has this ID: ``Non-existent <destination> workflow ID: <id>``.

    DBOS's signature is ``(destination, destination_id)``; one argument is the ID of the
    target workflow, as Spindle's own calls pass it.
    """

    def __init__(self, destination: str, destination_id: str | None = None) -> None:
        if destination_id is None:
            destination, destination_id = "target", destination
        super().__init__(
            f"Non-existent {destination} workflow ID: {destination_id}",
            DBOSErrorCode.NonExistentWorkflowError.value,
        )
        self.destination = destination
        self.workflow_id = destination_id

    def __reduce__(self) -> Any:
        return (type(self), (self.destination, self.workflow_id))


class DBOSConflictingWorkflowError(DBOSException):
    """One workflow ID was used for two different functions."""

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        super().__init__(
            f"Conflicting workflow invocation with the same ID ({workflow_id}): {message}",
            DBOSErrorCode.ConflictingWorkflowError.value,
        )
        self.workflow_id = workflow_id
        self.detail = message

    def __reduce__(self) -> Any:
        return (type(self), (self.workflow_id, self.detail))


class DBOSWorkflowConflictIDError(DBOSBaseException):
    """A workflow's database record already exists (DBOS's BaseException)."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"Conflicting workflow ID {workflow_id}", DBOSErrorCode.ConflictingIDError.value
        )
        self.workflow_id = workflow_id

    def __reduce__(self) -> Any:
        return (type(self), (self.workflow_id,))


class DBOSRecoveryError(DBOSException):
    """A workflow could not be recovered."""

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        super().__init__(
            f"Recovery error for workflow ID {workflow_id}: {message}",
            DBOSErrorCode.RecoveryError.value,
        )
        self.workflow_id = workflow_id
        self.detail = message

    def __reduce__(self) -> Any:
        return (type(self), (self.workflow_id, self.detail))


class DBOSWorkflowFunctionNotFoundError(DBOSException):
    """A recovered workflow names a function this process has not registered."""

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        super().__init__(
            f"Could not execute workflow {workflow_id}: {message}",
            DBOSErrorCode.WorkflowFunctionNotFound.value,
        )
        self.workflow_id = workflow_id
        self.detail = message

    def __reduce__(self) -> Any:
        return (type(self), (self.workflow_id, self.detail))


class DBOSWorkflowCancelledError(DBOSBaseException):
    """Raised inside a workflow that was cancelled (or timed out), at its next step boundary.

    A BaseException, as in DBOS: a workflow's ``except Exception`` does not swallow it.
    """

    def __init__(self, msg: str, dbos_error_code: int | None = None) -> None:
        super().__init__(msg, DBOSErrorCode.WorkflowCancelled.value)


class DBOSAwaitedWorkflowCancelledError(DBOSException):
    """Raised by ``get_result()`` of a workflow that was cancelled or timed out."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"Awaited workflow {workflow_id} was cancelled",
            DBOSErrorCode.AwaitedWorkflowCancelled.value,
        )
        self.workflow_id = workflow_id

    def __reduce__(self) -> Any:
        return (type(self), (self.workflow_id,))


class DBOSMaxStepRetriesExceeded(DBOSException):
    """A step failed on every one of its allowed attempts (``errors``: each attempt's)."""

    def __init__(self, step_name: str, max_retries: int, errors: list[BaseException]) -> None:
        super().__init__(
            f"Step {step_name} has exceeded its maximum of {max_retries} retries",
            DBOSErrorCode.MaxStepRetriesExceeded.value,
        )
        self.step_name = step_name
        self.max_retries = max_retries
        self.errors = errors

    def __reduce__(self) -> Any:
        return (type(self), (self.step_name, self.max_retries, self.errors))


class DBOSMaxRecoveryAttemptsExceededError(DBOSException):
    """A workflow was started or recovered more times than ``max_recovery_attempts``
    allows; it is ``MAX_RECOVERY_ATTEMPTS_EXCEEDED`` (``resume_workflow`` runs it again)."""

    def __init__(self, wf_id: str, max_retries: int | None = None) -> None:
        limit = f" of {max_retries}" if max_retries is not None else " number of"
        super().__init__(
            f"Workflow {wf_id} has exceeded its maximum{limit} execution or recovery "
            "attempts. Further attempts to execute or recover it will fail. See "
            "documentation for details: https://docs.dbos.dev/python/reference/decorators",
            DBOSErrorCode.MaxRecoveryAttemptsExceeded.value,
        )
        self.workflow_id = wf_id
        self.max_retries = max_retries

    def __reduce__(self) -> Any:
        return (type(self), (self.workflow_id, self.max_retries))


#: DBOS's name for :class:`DBOSMaxRecoveryAttemptsExceededError`.
MaxRecoveryAttemptsExceededError = DBOSMaxRecoveryAttemptsExceededError


class DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded(DBOSMaxRecoveryAttemptsExceededError):
    """Raised by ``get_result()`` of a workflow that is ``MAX_RECOVERY_ATTEMPTS_EXCEEDED``."""

    def __init__(self, workflow_id: str) -> None:
        DBOSException.__init__(
            self,
            f"Awaited workflow {workflow_id} exceeded its maximum recovery attempts",
            DBOSErrorCode.AwaitedWorkflowMaxRecoveryAttemptsExceeded.value,
        )
        self.workflow_id = workflow_id
        self.max_retries = None

    def __reduce__(self) -> Any:
        return (type(self), (self.workflow_id,))


class DBOSNotAuthorizedError(DBOSException):
    """A caller lacks a role the function requires (DBOS's class, raised by required_roles)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, DBOSErrorCode.NotAuthorized.value)
        self.status_code = 403
        self.detail = msg

    def __reduce__(self) -> Any:
        return (type(self), (self.detail,))


class DBOSConflictingRegistrationError(DBOSException):
    """Conflicting decorators were applied to one function (or one name)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Operation (Name: {name}) is already registered with a conflicting function type",
            DBOSErrorCode.ConflictingRegistrationError.value,
        )
        self.name = name

    def __reduce__(self) -> Any:
        return (type(self), (self.name,))


class DBOSUnexpectedStepError(DBOSException):
    """A replayed workflow reached a step other than the one recorded (non-determinism)."""

    def __init__(
        self, workflow_id: str, step_id: int, expected_name: str, recorded_name: str
    ) -> None:
        super().__init__(
            f"During execution of workflow {workflow_id} step {step_id}, function "
            f"{recorded_name} was recorded when {expected_name} was expected. Check that "
            "your workflow is deterministic.",
            DBOSErrorCode.UnexpectedStep.value,
        )
        self.inputs = (workflow_id, step_id, expected_name, recorded_name)

    def __reduce__(self) -> Any:
        return (type(self), self.inputs)


class DBOSQueueDeduplicatedError(DBOSException):
    """A workflow was enqueued with a deduplication ID already held by an ENQUEUED or PENDING
    workflow of the same queue."""

    def __init__(self, workflow_id: str, queue_name: str, deduplication_id: str) -> None:
        super().__init__(
            f"Workflow {workflow_id} was deduplicated due to an existing workflow in queue "
            f"{queue_name} with deduplication ID {deduplication_id}.",
            DBOSErrorCode.QueueDeduplicated.value,
        )
        self.workflow_id = workflow_id
        self.queue_name = queue_name
        self.deduplication_id = deduplication_id

    def __reduce__(self) -> Any:
        return (type(self), (self.workflow_id, self.queue_name, self.deduplication_id))


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
