"""Replies (rpcworker/replies.py): every request gets an answer that can be sent, and errors stay small."""

from __future__ import annotations

import io
from typing import Any

import msgspec
import pytest

from rpcworker.replies import ERROR_ITEMS_LIMIT, ERROR_TEXT_LIMIT, ReplySender
from rpcworker.wire.envelopes import Response
from rpcworker.wire.errors import InputNotFound, InternalError, InvalidRequest, MessageTooLarge, ParseError
from rpcworker.wire.framing import BadFrame, MessageStream
from rpcworker.wire.messages import PingResult

LIMIT = 1024
"""A small frame limit, so a too-large reply is cheap to make."""


def sender() -> tuple[ReplySender, io.BytesIO]:
    out = io.BytesIO()
    return ReplySender(MessageStream(io.BytesIO(), out, LIMIT)), out


def sent(out: io.BytesIO) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in out.getvalue().splitlines()]


def test_a_reply_too_large_to_send_becomes_message_too_large_on_its_id() -> None:
    replies, out = sender()
    replies.send(Response(3, {"blob": "x" * (2 * LIMIT)}))
    replies.send(Response(4, PingResult()))
    (error, after) = sent(out)
    assert (
        error["id"] == 3 and error["error"]["code"] == MessageTooLarge.code and error["error"]["data"]["limit"] == LIMIT
    )
    assert after == {"jsonrpc": "2.0", "id": 4, "result": {"pong": True}}


def test_a_reply_that_cannot_be_encoded_becomes_internal_error_on_its_id() -> None:
    replies, out = sender()
    replies.send(Response(5, {"value": object()}))
    (error,) = sent(out)
    assert (
        error["id"] == 5
        and error["error"]["code"] == InternalError.code
        and "cannot encode" in error["error"]["message"]
    )


def test_errors_echo_at_most_the_limits_of_what_the_request_carried() -> None:
    replies = ReplySender(MessageStream(io.BytesIO(), out := io.BytesIO()))
    long = "p" * (3 * ERROR_TEXT_LIMIT)
    replies.error(
        6, InputNotFound(f"input file not found: {long}", {"path": long, "many": list(range(10 * ERROR_ITEMS_LIMIT))})
    )
    (error,) = sent(out)
    assert (
        len(error["error"]["message"]) < ERROR_TEXT_LIMIT + 100
        and f"[cut: {len(long) + 22} characters]" in error["error"]["message"]
    )
    assert len(error["error"]["data"]["path"]) < ERROR_TEXT_LIMIT + 100
    assert error["error"]["data"]["many"] == list(range(ERROR_ITEMS_LIMIT))


@pytest.mark.parametrize(
    ("reason", "code"),
    [("too_large", MessageTooLarge.code), ("parse", ParseError.code), ("invalid", InvalidRequest.code)],
)
def test_a_bad_frame_is_answered_with_a_null_id(reason: str, code: int) -> None:
    replies, out = sender()
    replies.bad_frame(BadFrame(reason, "what was wrong", 12))
    (error,) = sent(out)
    assert error["id"] is None and error["error"]["code"] == code and error["error"]["data"]["size"] == 12


def test_a_reply_to_a_host_that_is_gone_is_dropped_quietly() -> None:
    out = io.BytesIO()
    replies = ReplySender(MessageStream(io.BytesIO(), out))
    out.close()
    replies.send(Response(7, PingResult()))
    replies.error(8, InputNotFound("gone", {}))
