"""Old import path of the wire types; they live in ``rpcworker.wire.messages``."""

from .wire.messages import *  # noqa: F403
from .wire.messages import MAX_LINE_BYTES, METHODS, PROTOCOL_VERSION, RequestId, major  # noqa: F401 (explicit for readers)
