"""The host side: start the InstantMesh worker in its own environment and drive it over stdio.

Imports nothing but msgspec (and the protocol modules of ``rpcworker``); no torch here.
"""

from rpcworker.errors import (
    Cancelled,
    HandleExpired,
    HostError,
    InputNotFound,
    InputUnreadable,
    InvalidParams,
    ModelNotLoaded,
    OutOfMemory,
    OutputRefused,
    RequestTimeout,
    RpcError,
    WorkerCrashed,
    WorkerStartError,
)

from .api import InstantMeshWorker, Mesh, TinyFallbackWarning, Views
from .client import WorkerClient
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
    "TinyFallbackWarning",
    "Views",
    "WorkerClient",
    "WorkerCommand",
    "WorkerCrashed",
    "WorkerProcess",
    "WorkerStartError",
]
