"""A tool call's worker progress as MCP progress: one number that only grows, sent at a bounded rate.

The worker reports each stage apart (``diffusion`` step 37 of 75, then ``reconstruct`` 1 of 3); MCP wants a single
value that increases with every notification. Stage ``i`` of a call's ``n`` stages maps to ``i + step/total`` out
of ``n``; a value that would not grow (a stage's step 0, another stage such as ``load``) is not sent, and between
two notifications at least PROGRESS_INTERVAL_S pass, except for a stage's last step, which is always sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from rpcworker.wire.messages import ProgressParams

PROGRESS_INTERVAL_S = 0.1
"""The least time between two progress notifications of one call (a 75-step diffusion may step every 20 ms)."""
STAGE_NAMES = {"diffusion": "views", "reconstruct": "mesh"}

SendProgress = Callable[[float, float, str], None]
"""Sends one notification: progress, total, message."""


class ProgressRelay:
    """An ``on_progress`` callback for one tool call; called on the worker session's callback thread."""

    def __init__(
        self,
        stages: Sequence[str],
        send: SendProgress,
        *,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stages = list(stages)
        self.total = float(len(self.stages))
        self._send = send
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sent = 0.0
        self._sent_at: float | None = None

    def __call__(self, progress: ProgressParams) -> None:
        if progress.stage not in self.stages or progress.total <= 0:
            return
        step = min(max(progress.step, 0), progress.total)
        value = self.stages.index(progress.stage) + step / progress.total
        stage_done = step == progress.total
        with self._lock:  # held while sending: notifications leave in the order of their values
            now = self._clock()
            if value <= self._sent:
                return
            if not stage_done and self._sent_at is not None and now - self._sent_at < self._interval_s:
                return
            self._sent, self._sent_at = value, now
            name = STAGE_NAMES.get(progress.stage, progress.stage)
            detail = f": {progress.message}" if progress.message else ""
            self._send(value, self.total, f"{name} {step}/{progress.total}{detail}")
