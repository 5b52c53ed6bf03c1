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

from .api.facade import InstantMeshWorker
from .api.options import MeshOptions, PrepareOptions, ViewOptions
from .api.outcome import ObjectOutcome
from .api.preparing import PreparationUnavailable
from .api.results import Mesh, Views
from .scale.object_steps import PoolViews
from .scale.pool import WorkerPool
from .scale.slots import PoolWorkerStatus
from .worker.client import WorkerClient
from .worker.errors import HostError, RequestTimeout, WeightsMissing, WorkerCrashed, WorkerStartError, WorkerStopped
from .worker.process import WorkerCommand, WorkerProcess

__all__ = [
    "Cancelled",
    "HandleExpired",
    "HostError",
    "InputNotFound",
    "InputUnreadable",
    "InstantMeshWorker",
    "InvalidParams",
    "Mesh",
    "MeshOptions",
    "ModelNotLoaded",
    "OutOfMemory",
    "ObjectOutcome",
    "OutputRefused",
    "PoolViews",
    "PreparationUnavailable",
    "PrepareOptions",
    "PoolWorkerStatus",
    "RequestTimeout",
    "RpcError",
    "ViewOptions",
    "Views",
    "WeightsMissing",
    "WorkerClient",
    "WorkerCommand",
    "WorkerCrashed",
    "WorkerProcess",
    "WorkerPool",
    "WorkerStartError",
    "WorkerStopped",
]
