"""The view store (rpcworker/handles.py): least-recently-used eviction, views kept for their reconstruct, clear errors."""

from __future__ import annotations

import pytest

from rpcworker.handles import ViewStore
from rpcworker.wire.errors import HandleExpired


def test_view_store_evicts_least_recently_used() -> None:
    store = ViewStore(2)
    a, b = store.put("A", 1), store.put("B", 1)
    store.get(b)
    store.get(a)
    c = store.put("C", 1)
    assert store.get(a)[0] == "A" and store.get(c)[0] == "C"
    with pytest.raises(HandleExpired, match="evicted") as info:
        store.get(b)
    assert info.value.data["reason"].startswith("evicted") and info.value.data["max_handles"] == 2


def test_view_store_keeps_views_waiting_for_their_reconstruct() -> None:
    """A host keeping `capacity` objects in flight: the views reconstructed already go first, however recent."""
    store = ViewStore(3)
    a, b = store.put("A", 1), store.put("B", 1)
    store.get(a)  # A reconstructed (and now the most recently used); B still waits
    c, d = store.put("C", 1), store.put("D", 1)
    assert [store.get(h)[0] for h in (b, c, d)] == ["B", "C", "D"]
    with pytest.raises(HandleExpired, match="evicted"):
        store.get(a)
    e = store.put("E", 1)  # every kept view has been used now: plain LRU, B goes
    assert [store.get(h)[0] for h in (c, d, e)] == ["C", "D", "E"] and len(store) == 3
    with pytest.raises(HandleExpired):
        store.get(b)


def test_view_store_names_foreign_and_bogus_handles() -> None:
    store, other = ViewStore(2), ViewStore(2)
    with pytest.raises(HandleExpired, match="another worker"):
        store.get(other.put("x", 1))
    with pytest.raises(HandleExpired, match="not a views handle"):
        store.get("nonsense")
