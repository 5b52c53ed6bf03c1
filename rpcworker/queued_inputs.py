"""Back-pressure: the bound on the bytes of inline images that queued model requests hold in the worker.

A request's inline image (``png``, ``grid_png``) stays in memory, decoded, from its arrival until it starts. A host
that sends faster than the worker works would grow the worker without limit; past the bound a request is refused
at once with ``busy`` (protocol.md section 12), and the host's map, batch, pool and Ray send it again once an
earlier request has ended. Requests naming files or handles hold no such bytes and are never refused.
"""

from __future__ import annotations

from typing import Any

from .wire.errors import WorkerBusy
from .wire.messages import GenerateViewsParams, ImagePng, ReconstructParams, ViewsGridPng

MIB = 1024 * 1024
DEFAULT_MAX_QUEUED_INLINE_MIB = 256
"""The worker's ``--max-queued-inline-mib`` when not given: room for a few hundred prepared images (a 320 px
PNG is well under 1 MiB), and about the memory the models' own buffers take beside it."""


def inline_bytes(params: Any) -> int:
    """The bytes of the inline image a model request's params carry (0 for a path or a handle)."""
    source = (
        params.image
        if isinstance(params, GenerateViewsParams)
        else (params.views if isinstance(params, ReconstructParams) else None)
    )
    return len(source.data) if isinstance(source, (ImagePng, ViewsGridPng)) else 0


class QueuedInlineBytes:
    """The inline bytes held by queued requests, against ``limit``. Not locked itself: the job queue calls it
    under its own lock, so a request is counted and queued (or refused) in one step."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the queued inline bytes' limit must be at least 1, got {limit}")
        self.limit = limit
        self.queued = 0

    def admit(self, method: str, size: int) -> None:
        """Counts ``size`` bytes of a request about to be queued; raises WorkerBusy (counting nothing) when
        they would pass the limit. While no queued request holds inline bytes, any one is admitted, so an
        image larger than the limit still runs, alone."""
        if size and self.queued and self.queued + size > self.limit:
            raise WorkerBusy(
                f"{method} refused: queued requests hold {_mib(self.queued)} of inline images and this one's "
                f"{_mib(size)} would pass the worker's limit of {_mib(self.limit)} (--max-queued-inline-mib); "
                "send it again once an earlier request has ended, or send images as paths",
                {"method": method, "size": size, "queued": self.queued, "limit": self.limit},
            )
        self.queued += size

    def release(self, size: int) -> None:
        """A queued request started (or left the queue): its bytes no longer count."""
        self.queued -= size


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"
