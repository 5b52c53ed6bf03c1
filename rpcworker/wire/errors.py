"""Error classes shared by the worker and the host, one per JSON-RPC error code in protocol.md.

Errors about the worker process itself (HostError and its kinds) are the host's: see ``host/worker/errors.py``.

The worker raises them inside methods; the dispatcher turns them into error responses; the host turns
error responses back into the same classes with :func:`error_from_wire`, so callers catch one hierarchy
whichever side found the problem.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RpcError(Exception):
    """An error that crosses the wire: a JSON-RPC code, a message and structured data."""

    code: ClassVar[int] = -32603
    name: ClassVar[str] = "internal_error"

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        return f"[{self.code} {self.name}] {self.message}"


class ParseError(RpcError):
    code = -32700
    name = "parse_error"


class InvalidRequest(RpcError):
    code = -32600
    name = "invalid_request"


class MethodNotFound(RpcError):
    code = -32601
    name = "method_not_found"


class InvalidParams(RpcError):
    code = -32602
    name = "invalid_params"


class InternalError(RpcError):
    code = -32603
    name = "internal_error"


class VersionMismatch(RpcError):
    code = -32001
    name = "version_mismatch"


class NotInitialized(RpcError):
    code = -32002
    name = "not_initialized"


class MessageTooLarge(RpcError):
    code = -32003
    name = "message_too_large"


class ShuttingDown(RpcError):
    code = -32004
    name = "shutting_down"


class WorkerBusy(RpcError):
    """A model request refused at once: its inline images would take the bytes held by queued requests past the
    worker's bound (protocol.md section 12). Nothing was queued; sending it again once an earlier request has
    ended can succeed."""

    code = -32005
    name = "busy"


class InputNotFound(RpcError):
    code = -32010
    name = "input_not_found"


class InputUnreadable(RpcError):
    code = -32011
    name = "input_unreadable"


class OutputRefused(RpcError):
    code = -32012
    name = "output_refused"


class ModelNotLoaded(RpcError):
    code = -32020
    name = "model_not_loaded"


class HandleExpired(RpcError):
    code = -32021
    name = "handle_expired"


class OutOfMemory(RpcError):
    code = -32030
    name = "out_of_memory"


class Cancelled(RpcError):
    code = -32040
    name = "cancelled"


WIRE_ERRORS: dict[int, type[RpcError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        VersionMismatch,
        NotInitialized,
        MessageTooLarge,
        ShuttingDown,
        WorkerBusy,
        InputNotFound,
        InputUnreadable,
        OutputRefused,
        ModelNotLoaded,
        HandleExpired,
        OutOfMemory,
        Cancelled,
    )
}


def error_from_wire(code: int, message: str, data: Any) -> RpcError:
    """Rebuild the error class for a code received on the wire (unknown codes stay a plain RpcError)."""
    cls = WIRE_ERRORS.get(code)
    payload = data if isinstance(data, dict) else ({"value": data} if data is not None else {})
    if cls is None:
        err = RpcError(message, payload)
        err.code = code  # type: ignore[misc]
        return err
    return cls(message, payload)
