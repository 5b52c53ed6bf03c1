"""The JSON-RPC 2.0 envelopes every line on the stdio channel is: requests, notifications, responses and errors,
and the loose shape a line is read as before it is classified. What goes inside them is in `messages`.
It imports nothing but msgspec, as the host (which has no torch) and the worker share it.
"""

from __future__ import annotations

from typing import Any, Union

from msgspec import UNSET, Raw, Struct, UnsetType

RequestId = Union[int, str]


class Incoming(Struct, omit_defaults=True):
    """Any JSON-RPC message before it is classified; params/result stay raw until the method is known."""

    jsonrpc: str | UnsetType = UNSET
    id: int | str | None | UnsetType = UNSET
    method: str | UnsetType = UNSET
    params: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    error: ErrorObject | UnsetType = UNSET


class ErrorObject(Struct, omit_defaults=True):
    code: int
    message: str
    data: dict[str, Any] | None = None


class Request(Struct, omit_defaults=True, tag_field="jsonrpc", tag="2.0"):
    """``"jsonrpc": "2.0"`` is written as the tag, so it always comes first and is never omitted."""

    id: RequestId
    method: str
    params: Any = UNSET


class Notification(Struct, omit_defaults=True, tag_field="jsonrpc", tag="2.0"):
    method: str
    params: Any = UNSET


class Response(Struct, tag_field="jsonrpc", tag="2.0"):
    id: RequestId
    result: Any


class ErrorResponse(Struct, tag_field="jsonrpc", tag="2.0"):
    id: RequestId | None
    error: ErrorObject
