"""What the GPU tests compare: grids as pixels, their largest difference, and that a pipeline runs on packages.

The constants are the wire's defaults, so the tests run what a request without options runs. Nothing here imports
torch at import time: the folder is collected (and skipped) where there is none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rpcworker.wire.messages import DEFAULT_GUIDANCE, DEFAULT_SEED, DEFAULT_STEPS

DEVICE = "cuda"
"""Where the fast path runs (the default device of a worker on a machine with a GPU)."""
STEPS = DEFAULT_STEPS
"""The production step count (75): a difference that grows along the steps shows at the count users run."""
SEED = DEFAULT_SEED
GUIDANCE = DEFAULT_GUIDANCE
MAX_LSB = 2
"""The fast path's promise: every pixel of the 0..255 grid within 2 of the reference (docs/benchmarks.md, 'Against
the targets')."""


def pixels(image: Any) -> np.ndarray:
    """A grid (PIL image, or the path of a saved one) as int16 pixels, so that differences do not wrap."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGB"), dtype=np.int16)
    return np.asarray(image, dtype=np.int16)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, f"grids of different shapes: {a.shape} and {b.shape}"
    return int(np.abs(a - b).max())


def differences(a: np.ndarray, b: np.ndarray) -> str:
    """The largest difference, the mean and how many pixels differ: the failure message of a comparison."""
    diff = np.abs(a - b)
    return f"max abs diff {int(diff.max())}, mean {float(diff.mean()):.4f}, {int((diff > 0).sum())} values differ"


def assert_every_network_packaged(pipeline: Any) -> None:
    """The views run on packaged networks, every package of them loaded, the step's two passes side by side through
    CUDA graphs: otherwise a comparison would not test the CUDA default (a start whose packages cannot run here
    falls back to the eager networks whole, with the reason in its log)."""
    from instantmesh.zero123plus.networks.packaged import PACKAGED_PARTS, PackagedNetworks

    networks = pipeline.networks
    assert isinstance(networks, PackagedNetworks), f"the views run on {type(networks).__name__}, not on packages"
    idle = sorted(prefix for prefix in PACKAGED_PARTS if not networks.parts[prefix].loaded)
    assert not idle, f"packages that never ran: {idle}"
    assert networks.overlapped.cuda_graphs, "the step's passes run without CUDA graphs"


def compile_files(cache: Path) -> dict[str, tuple[int, int]]:
    """Every file of the cache's compile folders (packages, their records, Inductor's and Triton's caches, the views
    bundle) by path, with its size and modification time: a start that builds or rewrites anything changes it."""
    return {
        str(path.relative_to(cache)): (path.stat().st_size, path.stat().st_mtime_ns)
        for folder in cache.glob("compile-*")
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> str:
    """The files added, removed and changed between two `compile_files`, a few of each."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    return f"added {len(added)} {added[:5]}, removed {len(removed)} {removed[:5]}, changed {len(changed)} {changed[:5]}"
