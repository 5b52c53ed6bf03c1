"""What a batch of objects over many workers gives back: one outcome per object, failures listed, not raised.

Shared by ``WorkerPool.map`` (local workers) and ``host.scale.ray.map_images`` (Ray actors), so both report alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpcworker.wire.errors import RpcError

from ..worker.errors import HostError
from .results import Mesh


@dataclass(frozen=True)
class ObjectOutcome:
    """One object of a map: ``mesh`` when it worked, else ``error`` (one line) and ``error_code``."""

    index: int
    """Position of the image in the list given to map."""
    name: str
    mesh: Mesh | None
    error: str | None = None
    error_code: str | None = None
    """The protocol's error name (``input_not_found``...) or the host error's class name (``WorkerCrashed``)."""
    worker: str = ""
    """Which worker made it (``0``, ``1``... in a pool; the Ray actor's node and pid under Ray)."""
    attempts: int = 1
    """2 when the first worker crashed or stalled and the object was redone on another."""
    grid_path: str | None = None
    views_timings: dict[str, float] = field(default_factory=dict)
    """The views' timings (``diffusion_s``, ``batch_size``...), where the map kept them."""
    latency_s: float | None = None
    """Host wall seconds from sending the object's first request to its mesh's answer (one worker's map)."""

    @property
    def ok(self) -> bool:
        return self.mesh is not None


@dataclass(frozen=True)
class ObjectTarget:
    """Where one object's files go."""

    name: str
    mesh: Path
    grid: Path | None


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(one-line message, code) for an exception an object's work raised."""
    if isinstance(exc, RpcError):
        return f"{exc.name}: {exc.message}", exc.name
    if isinstance(exc, HostError):
        return str(exc).splitlines()[0], type(exc).__name__
    return f"{type(exc).__name__}: {exc}", type(exc).__name__


def object_targets(
    images: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    format: str = "obj",
    save_grids: bool = True,
    names: Sequence[str] | None = None,
) -> list[ObjectTarget]:
    """Output paths per image: ``NAME.FORMAT`` and ``NAME_views.png``. NAME is the file stem for paths,
    ``object-NNNN`` for in-memory images, made unique (``stem-2``...) in list order, so reruns match."""
    if names is not None and len(names) != len(images):
        raise ValueError(f"names has {len(names)} entries for {len(images)} images")
    directory = Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir))))
    used: set[str] = set()
    targets = []
    for index, image in enumerate(images):
        if names is not None:
            stem = names[index]
        elif isinstance(image, (str, os.PathLike)):
            stem = Path(os.fspath(image)).stem or f"object-{index:04d}"
        else:
            stem = f"object-{index:04d}"
        name, n = stem, 2
        while name in used:
            name, n = f"{stem}-{n}", n + 1
        used.add(name)
        grid = directory / f"{name}_views.png" if save_grids else None
        targets.append(ObjectTarget(name, directory / f"{name}.{format}", grid))
    return targets


def failures(outcomes: Sequence[ObjectOutcome]) -> list[ObjectOutcome]:
    return [outcome for outcome in outcomes if not outcome.ok]
