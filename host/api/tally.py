"""A map's objects counted as they go: done (and failed), in flight, of how many, the rate and the time left.

A map keeps many objects in flight and finishes them one by one, so per-request bars cannot say how far it
is; this line can. Objects are counted by name (a map's names are unique), so telling the tally twice that
one object ended counts it once, whichever path of a map or a CLI reports it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SECONDS_PER_MINUTE = 60.0
BAR_WIDTH = 20


class ObjectTally:
    """Safe from many threads (a pool finishes objects on several). ``on_change`` gets the tally each time an
    object ends, outside the tally's lock."""

    def __init__(
        self,
        total: int,
        on_change: Callable[[ObjectTally], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.on_change = on_change
        self._clock = clock
        self._began = clock()
        self._lock = threading.Lock()
        self._started: set[str] = set()
        self._ended: dict[str, bool] = {}

    def started(self, name: str) -> None:
        """The object's first request is on its way."""
        with self._lock:
            self._started.add(name)

    def finished(self, name: str, ok: bool) -> None:
        """The object ended: its mesh is written (``ok``) or it failed; the later word about an object wins."""
        with self._lock:
            self._ended[name] = ok
        if self.on_change is not None:
            self.on_change(self)

    @property
    def done(self) -> int:
        with self._lock:
            return len(self._ended)

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(not ok for ok in self._ended.values())

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._started - self._ended.keys())

    def per_minute(self) -> float | None:
        """Objects ended per minute since the tally began; None before the first."""
        done, elapsed = self.done, self._clock() - self._began
        return done * SECONDS_PER_MINUTE / elapsed if done and elapsed > 0 else None

    def seconds_left(self) -> float | None:
        """At the rate so far; None before the first object ends."""
        rate = self.per_minute()
        return (self.total - self.done) * SECONDS_PER_MINUTE / rate if rate else None

    def line(self) -> str:
        """``objects [#####...] 12/40 done (1 failed), 8 in flight, 28.5/min, ETA 0:58``."""
        done, failed, flight = self.done, self.failed, self.in_flight
        filled = min(BAR_WIDTH, round(BAR_WIDTH * done / max(self.total, 1)))
        rate, left = self.per_minute(), self.seconds_left()
        return (
            f"objects [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.total} done"
            + (f" ({failed} failed)" if failed else "")
            + f", {flight} in flight, "
            + (f"{rate:.1f}/min" if rate is not None else "-/min")
            + f", ETA {clock_text(left) if left is not None else '-'}"
        )


def clock_text(seconds: float) -> str:
    """``0:58``, ``12:03`` or ``1:02:03``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
