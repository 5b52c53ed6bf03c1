"""Views kept in worker memory between generate_views and reconstruct, with a bounded LRU."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from typing import Any

from .wire.errors import HandleExpired


class ViewStore:
    """Maps handles to views, at most ``capacity`` of them.

    Past it, the least recently used handle among those already used (by a reconstruct) is evicted; one never
    used is evicted only when no used one is left. So views waiting for their reconstruct survive newer views,
    as long as no more than ``capacity`` wait at once (what a host keeping objects in flight must count).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._instance = secrets.token_hex(4)
        self._next = 1
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, views: Any, view_size: int) -> str:
        with self._lock:
            handle = f"views-{self._instance}-{self._next}"
            self._next += 1
            self._items[handle] = (views, view_size)
            while len(self._items) > self.capacity:
                victim = next((h for h in self._items if h in self._used), next(iter(self._items)))
                del self._items[victim]
                self._used.discard(victim)
            return handle

    def get(self, handle: str) -> tuple[Any, int]:
        with self._lock:
            item = self._items.get(handle)
            if item is not None:
                self._items.move_to_end(handle)
                self._used.add(handle)
                return item
            reason = self._why_missing(handle)
        raise HandleExpired(
            f"views handle {handle!r} is no longer available: {reason}",
            {"handle": handle, "reason": reason, "max_handles": self.capacity},
        )

    def _why_missing(self, handle: str) -> str:
        parts = handle.split("-")
        if len(parts) != 3 or parts[0] != "views" or not parts[2].isdigit():
            return "not a views handle"
        if parts[1] != self._instance:
            return "it belongs to another worker process (the worker was restarted)"
        if int(parts[2]) < self._next:
            return f"evicted (the worker keeps {self.capacity} views, those not yet used first)"
        return "never issued"

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._used.clear()
