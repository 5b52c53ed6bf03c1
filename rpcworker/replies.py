"""Sending replies: an error always goes out small and encodable, and a reply that cannot be sent as it
is becomes an error on its request's id — never a dropped frame that leaves the caller waiting."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from .wire.envelopes import ErrorObject, ErrorResponse, RequestId
from .wire.errors import InternalError, InvalidRequest, MessageTooLarge, ParseError, RpcError
from .wire.framing import BadFrame, FrameTooLarge, MessageStream

log = logging.getLogger("rpcworker")

ERROR_TEXT_LIMIT = 4096
"""Longest string echoed in an error's message or data: a reply never grows with what the request carried."""
ERROR_ITEMS_LIMIT = 64
"""Most items of a list or dict echoed in an error's data."""
ERROR_KEY_LIMIT = 256


class ReplySender:
    def __init__(self, stream: MessageStream) -> None:
        self.stream = stream

    def send(self, message: msgspec.Struct) -> None:
        try:
            self.stream.send(message)
        except FrameTooLarge as exc:
            log.error("a %s is too large to send: %s", type(message).__name__, exc)
            request_id = getattr(message, "id", None)
            if request_id is not None and not isinstance(message, ErrorResponse):
                self.error(
                    request_id,
                    MessageTooLarge(f"the reply is too large to send: {exc}", {"size": exc.size, "limit": exc.limit}),
                )
        except UnicodeEncodeError as exc:
            # A string that is not valid UTF-8 (a file name that is not UTF-8 reaches Python as surrogates).
            log.error("could not encode a %s: %s", type(message).__name__, exc)
            if isinstance(message, ErrorResponse):
                error = message.error
                self.send(ErrorResponse(message.id, ErrorObject(error.code, utf8(error.message), utf8(error.data))))
            elif (request_id := getattr(message, "id", None)) is not None:
                self.error(
                    request_id,
                    InternalError(
                        "the reply cannot be sent: it holds a string that is not valid UTF-8 "
                        "(a file or directory name that is not UTF-8?)",
                        {"type": "UnicodeEncodeError", "detail": utf8(str(exc))},
                    ),
                )
        except (TypeError, msgspec.EncodeError) as exc:
            log.error("could not encode a %s: %s", type(message).__name__, exc)
            request_id = getattr(message, "id", None)
            if request_id is not None and not isinstance(message, ErrorResponse):
                self.error(
                    request_id,
                    InternalError(f"the worker built a reply it cannot encode: {exc}", {"type": type(exc).__name__}),
                )
        except (ValueError, OSError):
            log.warning("could not send a %s: the host is gone", type(message).__name__)

    def error(self, request_id: RequestId | None, err: RpcError) -> None:
        """Sends an error; long strings the request put in it (a huge path or method name) are cut."""
        self.send(ErrorResponse(request_id, ErrorObject(err.code, clip(err.message), clip(err.data) or None)))

    def bad_frame(self, bad: BadFrame) -> None:
        data: dict[str, Any] = {"detail": bad.detail, "size": bad.size}
        if bad.reason == "too_large":
            err: RpcError = MessageTooLarge(
                f"message discarded: {bad.detail}", {**data, "limit": self.stream.max_line_bytes}
            )
        elif bad.reason == "parse":
            err = ParseError(f"not valid JSON: {bad.detail}", data)
        else:
            err = InvalidRequest(f"not a JSON-RPC message: {bad.detail}", data)
        self.error(None, err)


def clip(value: Any, limit: int = ERROR_TEXT_LIMIT) -> Any:
    """``value`` with every string cut to ``limit`` characters (and containers to ERROR_ITEMS_LIMIT items)."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}... [cut: {len(value)} characters]"
    if isinstance(value, dict):
        return {clip(str(k), ERROR_KEY_LIMIT): clip(v, limit) for k, v in list(value.items())[:ERROR_ITEMS_LIMIT]}
    if isinstance(value, (list, tuple)):
        return [clip(v, limit) for v in value[:ERROR_ITEMS_LIMIT]]
    return value


def utf8(value: Any) -> Any:
    """``value`` with every string made encodable: a lone surrogate (an undecodable byte) becomes ``\\udcXX``."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {utf8(k): utf8(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [utf8(v) for v in value]
    return value
