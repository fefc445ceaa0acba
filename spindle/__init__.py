"""Spindle: a durable-workflow runtime, DBOS Transact-compatible, that shows its threads."""

from .runtime import DBOS as DBOS
from .runtime import AsyncSQLAlchemyDatasource as AsyncSQLAlchemyDatasource
from .runtime import ClientScheduleInput as ClientScheduleInput
from .runtime import DBOSAwaitedWorkflowCancelledError as DBOSAwaitedWorkflowCancelledError
from .runtime import DBOSClient as DBOSClient
from .runtime import DBOSConfig as DBOSConfig
from .runtime import DBOSConfigError as DBOSConfigError
from .runtime import DBOSConfiguredInstance as DBOSConfiguredInstance
from .runtime import DBOSContextEnsure as DBOSContextEnsure
from .runtime import DBOSContextSetAuth as DBOSContextSetAuth
from .runtime import DBOSDestroyInWorkflowError as DBOSDestroyInWorkflowError
from .runtime import DBOSException as DBOSException
from .runtime import DBOSMaxRecoveryAttemptsExceededError as DBOSMaxRecoveryAttemptsExceededError
from .runtime import DBOSMaxStepRetriesExceeded as DBOSMaxStepRetriesExceeded
from .runtime import DBOSNonExistentWorkflowError as DBOSNonExistentWorkflowError
from .runtime import DBOSNotLaunchedError as DBOSNotLaunchedError
from .runtime import DBOSPortableJSONSerializer as DBOSPortableJSONSerializer
from .runtime import DBOSQueueDeduplicatedError as DBOSQueueDeduplicatedError
from .runtime import DBOSRuntimeShutdownError as DBOSRuntimeShutdownError
from .runtime import DBOSSerializationError as DBOSSerializationError
from .runtime import DBOSSystemDatabaseUnavailableError as DBOSSystemDatabaseUnavailableError
from .runtime import DBOSWorkflowCancelledError as DBOSWorkflowCancelledError
from .runtime import DBOSWorkflowConflictIDError as DBOSWorkflowConflictIDError
from .runtime import Debouncer as Debouncer
from .runtime import DebouncerClient as DebouncerClient
from .runtime import DefaultSerializer as DefaultSerializer
from .runtime import DuplicationPolicy as DuplicationPolicy
from .runtime import EnqueueOptions as EnqueueOptions
from .runtime import Event as Event
from .runtime import EventSource as EventSource
from .runtime import KafkaMessage as KafkaMessage
from .runtime import PortableWorkflowError as PortableWorkflowError
from .runtime import PropagateOtelContext as PropagateOtelContext
from .runtime import Queue as Queue
from .runtime import ScheduleInput as ScheduleInput
from .runtime import SendMessage as SendMessage
from .runtime import Serializer as Serializer
from .runtime import SetEnqueueOptions as SetEnqueueOptions
from .runtime import SetWorkflowAttributes as SetWorkflowAttributes
from .runtime import SetWorkflowID as SetWorkflowID
from .runtime import SetWorkflowTimeout as SetWorkflowTimeout
from .runtime import SQLAlchemyDatasource as SQLAlchemyDatasource
from .runtime import StepInfo as StepInfo
from .runtime import StepOptions as StepOptions
from .runtime import VersionInfo as VersionInfo
from .runtime import WorkflowHandle as WorkflowHandle
from .runtime import WorkflowHandleAsync as WorkflowHandleAsync
from .runtime import WorkflowSchedule as WorkflowSchedule
from .runtime import WorkflowSerializationFormat as WorkflowSerializationFormat
from .runtime import WorkflowStatus as WorkflowStatus
from .runtime import WorkflowStatusString as WorkflowStatusString
from .runtime import error as error
from .runtime import make_pydantic_args_validator as make_pydantic_args_validator
from .runtime import pydantic_args_validator as pydantic_args_validator
from .runtime import run_dbos_database_migrations as run_dbos_database_migrations

__all__ = [
    "DBOS",
    "AsyncSQLAlchemyDatasource",
    "ClientScheduleInput",
    "DBOSAwaitedWorkflowCancelledError",
    "DBOSClient",
    "DBOSConfig",
    "DBOSConfigError",
    "DBOSConfiguredInstance",
    "DBOSContextEnsure",
    "DBOSContextSetAuth",
    "DBOSDestroyInWorkflowError",
    "DBOSException",
    "DBOSMaxRecoveryAttemptsExceededError",
    "DBOSMaxStepRetriesExceeded",
    "DBOSNonExistentWorkflowError",
    "DBOSNotLaunchedError",
    "DBOSPortableJSONSerializer",
    "DBOSQueueDeduplicatedError",
    "DBOSRuntimeShutdownError",
    "DBOSSerializationError",
    "DBOSSystemDatabaseUnavailableError",
    "DBOSWorkflowCancelledError",
    "DBOSWorkflowConflictIDError",
    "Debouncer",
    "DebouncerClient",
    "DefaultSerializer",
    "DuplicationPolicy",
    "EnqueueOptions",
    "Event",
    "EventSource",
    "KafkaMessage",
    "PortableWorkflowError",
    "PropagateOtelContext",
    "Queue",
    "SQLAlchemyDatasource",
    "ScheduleInput",
    "SendMessage",
    "Serializer",
    "SetEnqueueOptions",
    "SetWorkflowAttributes",
    "SetWorkflowID",
    "SetWorkflowTimeout",
    "StepInfo",
    "StepOptions",
    "VersionInfo",
    "WorkflowHandle",
    "WorkflowHandleAsync",
    "WorkflowSchedule",
    "WorkflowSerializationFormat",
    "WorkflowStatus",
    "WorkflowStatusString",
    "error",
    "make_pydantic_args_validator",
    "pydantic_args_validator",
    "run_dbos_database_migrations",
]
