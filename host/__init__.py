"""The host side: start the InstantMesh worker in its own environment and drive it over stdio.

Installed, this package is ``instantmesh_rpc``; in the checkout it is the folder ``host/`` (setup.py). Imports
nothing but msgspec (and the protocol modules of ``rpcworker``); no torch here. ``prepare`` (input preparation)
needs the ``[images]`` extra and is imported on first use.
"""

from __future__ import annotations

from typing import Any

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
    WorkerBusy,
)

from .api.build_ahead import CompiledViewsNotBuilt, build_compiled_views
from .api.facade import InstantMeshWorker
from .api.options import MeshOptions, PrepareOptions, ViewOptions
from .api.outcome import ObjectOutcome, OutputIsAnInput
from .api.preparing import PreparationUnavailable
from .api.results import Mesh, Views
from .scale.object_steps import PoolViews
from .scale.pool import WorkerPool
from .scale.slots import PoolWorkerStatus
from .worker.cancellation import Cancellation
from .worker.client import WorkerClient
from .worker.errors import HostError, RequestTimeout, WeightsMissing, WorkerCrashed, WorkerStartError, WorkerStopped
from .worker.process import WorkerCommand, WorkerProcess

__all__ = [
    "Cancellation",
    "Cancelled",
    "CompiledViewsNotBuilt",
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
    "OutputIsAnInput",
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
    "WorkerBusy",
    "WorkerCommand",
    "WorkerCrashed",
    "WorkerProcess",
    "WorkerPool",
    "WorkerStartError",
    "WorkerStopped",
    "build_compiled_views",
    "prepare",
]


def __getattr__(name: str) -> Any:
    """``prepare`` on first use: it needs pillow and numpy, which importing the host must not."""
    if name == "prepare":
        from .images.preparation import prepare

        return prepare
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
