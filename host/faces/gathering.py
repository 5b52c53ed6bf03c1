"""Concurrent tool calls' views requests leave together, so a worker that batches runs them as one batch.

``map`` fills the worker's batches by sending a batch's views requests at once; concurrent tool calls arrive one
by one and prepare their inputs for different times (a large photo, rembg), so the first ready would start a
batch of one. The gate holds a call whose input is ready while calls that arrived before it was ready are still
preparing theirs (at most GATHER_LIMIT_S), then lets them all go in the same instant. It runs on the server's
event loop; with a worker that takes one object at a time it lets every call through at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

GATHER_LIMIT_S = 2.0
"""The longest a ready call waits for others to finish preparing (rembg on a CPU may take this long)."""


class ArrivalGate:
    """Around each call's input preparation; ``batching`` is switched on once the worker is known to batch."""

    def __init__(self, limit_s: float = GATHER_LIMIT_S) -> None:
        self.limit_s = limit_s
        self.batching = False
        self._preparing = 0
        self._all_ready = anyio.Event()

    @asynccontextmanager
    async def preparing(self) -> AsyncIterator[None]:
        """The block prepares one call's input; on leaving it, the call waits for the others still preparing.
        A block that raises leaves at once (that call sends nothing)."""
        self._preparing += 1
        try:
            yield
        except BaseException:
            self._leave()
            raise
        all_ready = self._leave()
        if all_ready is not None and self.batching:
            with anyio.move_on_after(self.limit_s):
                await all_ready.wait()

    def _leave(self) -> anyio.Event | None:
        """One call fewer preparing; returns the event to wait on, or None when this was the last one."""
        self._preparing -= 1
        if self._preparing == 0:
            self._all_ready.set()
            self._all_ready = anyio.Event()
            return None
        return self._all_ready
