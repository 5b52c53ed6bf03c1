"""Old import path: the dispatcher was split into the session (rpcworker/session.py), the job queue
(rpcworker/jobs.py), the model handlers (rpcworker/handlers.py) and the replies (rpcworker/replies.py)."""

from .replies import ERROR_TEXT_LIMIT
from .session import WorkerSession as Dispatcher

__all__ = ["ERROR_TEXT_LIMIT", "Dispatcher"]
