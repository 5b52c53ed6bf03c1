"""Peak host memory of FlexiCubes extraction on a noisy surface, on the CPU: the mesh phase's working set.

``python -m benchmarks.mesh_memory [--grid 128] [--noise 0.2] [--out benchmarks/results/cpu]``

A smooth random field plus noise on the (grid+1)^3 vertices (about a million dual vertices at grid 128, like
the random-weights LRM's surface) goes through `FlexiCubesGeometry.extract`; the peak resident memory over
the inputs is the extraction's working set (VmHWM, reset before it). glibc is told to map every allocation
of 64 KiB or more on its own, so freed tensors leave the resident set at once and the peak is the tensors'.
Writes mesh_memory.json and .md; the output hash lets two versions be compared for equal meshes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

from .common import table, write_results

MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"
MMAP_THRESHOLD_BYTES = 65536
COARSE_CELLS = 9
"""Cells per axis of the smooth part of the field (its large-scale shape)."""
DEFORMATION_SCALE = 0.01


def resident_gib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu"))
    args = parser.parse_args(argv)
    if os.environ.get(MMAP_THRESHOLD_ENV) != str(MMAP_THRESHOLD_BYTES):  # the allocator reads it at start: start again
        env = {**os.environ, MMAP_THRESHOLD_ENV: str(MMAP_THRESHOLD_BYTES)}
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.mesh_memory", *sys.argv[1:]], env)
    import torch

    from instantmesh.flexicubes.geometry import FlexiCubesGeometry

    torch.set_num_threads(1)
    grid = args.grid
    geometry = FlexiCubesGeometry(grid, 2.0)
    generator = torch.Generator().manual_seed(0)
    n = (grid + 1) ** 3
    coarse = torch.randn(1, 1, COARSE_CELLS, COARSE_CELLS, COARSE_CELLS, generator=generator)
    sdf = torch.nn.functional.interpolate(coarse, size=(grid + 1,) * 3, mode="trilinear").reshape(-1)
    sdf += args.noise * torch.randn(n, generator=generator)
    deformation = DEFORMATION_SCALE * torch.randn(n, 3, generator=generator)
    weight = torch.randn(grid**3, 21, generator=generator)
    before = resident_gib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    start = time.perf_counter()
    vertices, faces = geometry.extract(sdf, deformation, weight)
    seconds = time.perf_counter() - start
    results = {
        "grid": grid, "noise": args.noise, "vertices": len(vertices), "faces": len(faces), "extract_s": seconds,
        "peak_over_inputs_gib": resident_gib("VmHWM") - before, "torch": torch.__version__,
        "mesh_sha1": hashlib.sha1(vertices.numpy().tobytes() + faces.numpy().tobytes()).hexdigest()[:12],
    }
    write_results(args.out, "mesh_memory", results)
    text = table(f"FlexiCubes extraction on the CPU (grid {grid}, torch {torch.__version__})",
                 ["vertices", "faces", "peak over inputs GiB", "seconds", "mesh sha1"],
                 [[results["vertices"], results["faces"], results["peak_over_inputs_gib"], seconds, results["mesh_sha1"]]])
    (args.out / "mesh_memory.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
