"""The host side: start the InstantMesh worker in its own environment and drive it over stdio.

Imports nothing but msgspec (and the protocol modules of ``rpcworker``); no torch here.
"""

from rpcworker.wire.errors import (
    Cancelled,
    HandleExpired,
    InputNotFound,
    InputUnreadable,
    InvalidParams,
    ModelNotLoaded,
    OutOfMemory,
    OutputRefused,
    RpcError,
)

from .api import InstantMeshWorker, Mesh, TinyFallbackWarning, Views
from .client import WorkerClient
from .errors import HostError, RequestTimeout, WorkerCrashed, WorkerStartError, WorkerStopped
from .outcome import ObjectOutcome
from .pool import PoolViews, WorkerPool
from .pool_slots import PoolWorkerStatus
from .process import WorkerCommand, WorkerProcess

__all__ = [
    "Cancelled",
    "HandleExpired",
    "HostError",
    "InputNotFound",
    "InputUnreadable",
    "InstantMeshWorker",
    "InvalidParams",
    "Mesh",
    "ModelNotLoaded",
    "OutOfMemory",
    "ObjectOutcome",
    "OutputRefused",
    "PoolViews",
    "PoolWorkerStatus",
    "RequestTimeout",
    "RpcError",
    "TinyFallbackWarning",
    "Views",
    "WorkerClient",
    "WorkerCommand",
    "WorkerCrashed",
    "WorkerProcess",
    "WorkerPool",
    "WorkerStartError",
    "WorkerStopped",
]
