"""Old import path of the framing; it lives in ``rpcworker.wire.framing``."""

from .wire.framing import BadFrame, FrameTooLarge, MessageStream, Received  # noqa: F401
