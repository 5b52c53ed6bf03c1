"""The host side: start the InstantMesh worker in its own environment and drive it over stdio.

Imports nothing but msgspec (and the protocol modules of ``rpcworker``); no torch here.
"""

from host.api.facade import InstantMeshWorker, TinyFallbackWarning
from host.api.options import MeshOptions, ViewOptions
from host.api.outcome import ObjectOutcome
from host.api.results import Mesh, Views
from host.scale.object_steps import PoolViews
from host.scale.pool import WorkerPool
from host.scale.slots import PoolWorkerStatus
from host.worker.client import WorkerClient
from host.worker.errors import HostError, RequestTimeout, WorkerCrashed, WorkerStartError, WorkerStopped
from host.worker.process import WorkerCommand, WorkerProcess
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
    "PoolWorkerStatus",
    "RequestTimeout",
    "RpcError",
    "TinyFallbackWarning",
    "ViewOptions",
    "Views",
    "WorkerClient",
    "WorkerCommand",
    "WorkerCrashed",
    "WorkerProcess",
    "WorkerPool",
    "WorkerStartError",
    "WorkerStopped",
]
