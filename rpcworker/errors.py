"""Old import path of the wire's error classes; they live in ``rpcworker.wire.errors``.

The host-only errors (HostError, WorkerCrashed, ...) moved to ``host.worker.errors``; importing them from here
still works, lazily, for code written before the move.
"""

from typing import Any

from .wire.errors import *  # noqa: F403
from .wire.errors import WIRE_ERRORS, RpcError, error_from_wire  # noqa: F401

_MOVED_TO_HOST = ("HostError", "WorkerStartError", "WorkerCrashed", "WorkerStopped", "RequestTimeout")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_HOST:
        from host.worker import errors as host_errors

        return getattr(host_errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
