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

from .api import InstantMeshWorker, Mesh, Views
from .client import WorkerClient
from .errors import HostError, RequestTimeout, WorkerCrashed, WorkerStartError, WorkerStopped
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
    "OutputRefused",
    "RequestTimeout",
    "RpcError",
    "Views",
    "WorkerClient",
    "WorkerCommand",
    "WorkerCrashed",
    "WorkerProcess",
    "WorkerStartError",
    "WorkerStopped",
]
