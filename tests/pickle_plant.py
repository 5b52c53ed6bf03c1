"""A weights-shaped pickle that leaves a marker file behind when anything unpickles it.

Planted where diffusers or transformers would look for a ``.bin``, it tells a test whether a loader opened it:
``torch.load`` without ``weights_only`` (what upstream's pinned libraries call) unpickles the first object of a
pickle that is no zip file, which creates the marker. No code of ours may ever make one appear.
"""

from __future__ import annotations

import pickle
from pathlib import Path


class _CreatesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def plant_pickle(path: Path, marker: Path) -> Path:
    """Writes at `path` a pickle whose unpickling creates `marker` (a probe of the same pickle shows it does)."""
    probe = marker.with_name(f"{marker.name}.probe")
    pickle.loads(pickle.dumps(_CreatesMarker(probe)))
    assert probe.is_file(), "the planted pickle would not show that it was unpickled"
    probe.unlink()
    path.write_bytes(pickle.dumps(_CreatesMarker(marker)))
    return path
