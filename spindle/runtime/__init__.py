"""The engine: workflows, steps, the system database, threads and the ordered shutdown."""

from . import _errors as error
from ._attributes import SetWorkflowAttributes as SetWorkflowAttributes
from ._classes import DBOSConfiguredInstance as DBOSConfiguredInstance
from ._client import DBOSClient as DBOSClient
from ._client_schedules import ClientScheduleInput as ClientScheduleInput
from ._config import DBOSConfig as DBOSConfig
from ._context import SetWorkflowID as SetWorkflowID
from ._context import SetWorkflowTimeout as SetWorkflowTimeout
from ._context_ensure import DBOSContextEnsure as DBOSContextEnsure
from ._context_ensure import PropagateOtelContext as PropagateOtelContext
from ._datasource import SQLAlchemyDatasource as SQLAlchemyDatasource
from ._datasource_async import AsyncSQLAlchemyDatasource as AsyncSQLAlchemyDatasource
from ._db_migrations_cli import run_dbos_database_migrations as run_dbos_database_migrations
from ._dbos import DBOS as DBOS
from ._debouncer import Debouncer as Debouncer
from ._debouncer import DebouncerClient as DebouncerClient
from ._duplication import DuplicationPolicy as DuplicationPolicy
from ._enqueue_options import EnqueueOptions as EnqueueOptions
from ._errors import DBOSAwaitedWorkflowCancelledError as DBOSAwaitedWorkflowCancelledError
from ._errors import DBOSConfigError as DBOSConfigError
from ._errors import DBOSDestroyInWorkflowError as DBOSDestroyInWorkflowError
from ._errors import DBOSException as DBOSException
from ._errors import DBOSMaxRecoveryAttemptsExceededError as DBOSMaxRecoveryAttemptsExceededError
from ._errors import DBOSMaxStepRetriesExceeded as DBOSMaxStepRetriesExceeded
from ._errors import DBOSNonExistentWorkflowError as DBOSNonExistentWorkflowError
from ._errors import DBOSNotLaunchedError as DBOSNotLaunchedError
from ._errors import DBOSQueueDeduplicatedError as DBOSQueueDeduplicatedError
from ._errors import DBOSRuntimeShutdownError as DBOSRuntimeShutdownError
from ._errors import DBOSSerializationError as DBOSSerializationError
from ._errors import DBOSSystemDatabaseUnavailableError as DBOSSystemDatabaseUnavailableError
from ._errors import DBOSWorkflowCancelledError as DBOSWorkflowCancelledError
from ._errors import DBOSWorkflowConflictIDError as DBOSWorkflowConflictIDError
from ._facade_messaging import SendMessage as SendMessage
from ._facade_schedules import ScheduleInput as ScheduleInput
from ._facade_steps import StepOptions as StepOptions
from ._handles import WorkflowHandle as WorkflowHandle
from ._handles import WorkflowHandleAsync as WorkflowHandleAsync
from ._introspection import StepInfo as StepInfo
from ._kafka import KafkaMessage as KafkaMessage
from ._pollers import Event as Event
from ._pollers import EventSource as EventSource
from ._portable import DBOSPortableJSONSerializer as DBOSPortableJSONSerializer
from ._portable import PortableWorkflowError as PortableWorkflowError
from ._queue import Queue as Queue
from ._queue import SetEnqueueOptions as SetEnqueueOptions
from ._roles import DBOSContextSetAuth as DBOSContextSetAuth
from ._schedules import WorkflowSchedule as WorkflowSchedule
from ._serializer import DefaultSerializer as DefaultSerializer
from ._serializer import Serializer as Serializer
from ._serializer import WorkflowSerializationFormat as WorkflowSerializationFormat
from ._status import WorkflowStatus as WorkflowStatus
from ._status import WorkflowStatusString as WorkflowStatusString
from ._validation import make_pydantic_args_validator as make_pydantic_args_validator
from ._validation import pydantic_args_validator as pydantic_args_validator
from ._versions import VersionInfo as VersionInfo

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
