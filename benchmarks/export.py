"""Mesh export on the CPU, ours against trimesh, for OBJ, PLY and GLB.

``python -m benchmarks.export [--out benchmarks/results/cpu-dev] [--repeats 3] [--mesh mesh.npz ...]``
writes export.json and export.md. The meshes: an icosphere (subdivisions 6) with its faces padded to 100k,
and 1 M random vertices with 2 M random faces, both with random vertex colours; ``--mesh`` adds saved meshes
(``vertices``, ``faces``, ``colors`` arrays, as ``benchmarks.fast_path`` saves the extracted one).

Every write goes to a new file, as the worker's atomic writes do: writing over a just-written file also pays
for truncating it, which the closing line measures against a new file.
Each figure is the fastest of ``--repeats`` runs; the first run is shown too (in a fresh process it also
pays for faulting in new memory).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("obj", "ply", "glb")
Mesh = tuple[np.ndarray, np.ndarray, np.ndarray]
SPHERE_SUBDIVISIONS = 6
PADDED_FACES = 100_000
LARGE_VERTICES = 1_000_000
PREVIOUS_FILE_MB = 100
"""About the size of trimesh's OBJ of the 0.89 M-vertex extracted mesh."""


def synthetic_meshes(subdivisions: int = SPHERE_SUBDIVISIONS, large: int = LARGE_VERTICES) -> dict[str, Mesh]:
    """The ~100k-face icosphere and the 1 M-vertex random mesh (smaller with the arguments), fixed seed."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    rng = np.random.default_rng(0)
    faces = np.vstack([sphere.faces, sphere.faces[: max(0, PADDED_FACES - len(sphere.faces))]])
    n = large
    return {
        f"~{round(len(faces) / 1000)}k faces ({len(sphere.vertices)} vertices)": (
            sphere.vertices,
            faces,
            rng.integers(0, 256, (len(sphere.vertices), 3)),
        ),
        f"{n / 1e6:g}M vertices, {2 * n / 1e6:g}M faces": (
            rng.uniform(-1, 1, (n, 3)),
            rng.integers(0, n, (2 * n, 3)),
            rng.integers(0, 256, (n, 3)),
        ),
    }


def saved_mesh(path: Path, label: str = "saved mesh") -> dict[str, Mesh]:
    saved = np.load(path)
    return {f"{label} ({len(saved['vertices'])} vertices)": (saved["vertices"], saved["faces"], saved["colors"])}


def fastest(write: Callable[[str], None], folder: str, fmt: str, repeats: int) -> list[float]:
    """Seconds per run, each run writing a new file (removed afterwards, outside the timing)."""
    times = []
    for i in range(repeats):
        path = os.path.join(folder, f"run{i}.{fmt}")
        t = time.perf_counter()
        write(path)
        times.append(time.perf_counter() - t)
        os.unlink(path)
    return times


def _ours(mesh: Mesh, fmt: str, path: str) -> None:
    from instantmesh.export import write_mesh

    write_mesh(path, fmt, *mesh)


def _trimesh(mesh: Mesh, fmt: str, path: str) -> None:
    import trimesh

    v, f, c = mesh
    trimesh.Trimesh(vertices=v, faces=f, vertex_colors=c.astype(np.uint8), process=False).export(path, file_type=fmt)


def export_rows(meshes: dict[str, Mesh], repeats: int = 1, trimesh_repeats: int = 1) -> list[dict[str, Any]]:
    """Ours and trimesh's writers, every mesh and format: the fastest run of each, and all runs."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, mesh in meshes.items():
            for fmt in FORMATS:
                ours = fastest(partial(_ours, mesh, fmt), tmp, fmt, repeats)
                other = fastest(partial(_trimesh, mesh, fmt), tmp, fmt, trimesh_repeats)
                rows.append(
                    {
                        "mesh": name,
                        "format": fmt,
                        "export_s": min(ours),
                        "trimesh_s": min(other),
                        "speedup": min(other) / min(ours),
                        "export_runs_s": ours,
                        "trimesh_runs_s": other,
                    }
                )
    return rows


def overwrite_cost(mesh: Mesh, repeats: int, previous_mb: int = PREVIOUS_FILE_MB) -> dict[str, Any]:
    """Our OBJ written over a just-written large file at the same path (the open truncates it) vs a new path:
    the old fast_path loop wrote every mesh over the previous mesh's trimesh file."""
    filler = b"v 0.0 0.0 0.0\n" * (previous_mb * 2**20 // 14)
    over, fresh = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            path = os.path.join(tmp, f"over{i}.obj")
            with open(path, "wb") as f:
                f.write(filler)
            t = time.perf_counter()
            _ours(mesh, "obj", path)
            over.append(time.perf_counter() - t)
            os.unlink(path)
            fresh += fastest(partial(_ours, mesh, "obj"), tmp, "obj", 1)
    return {"previous_file_mb": previous_mb, "over_existing_s": over, "new_file_s": fresh}


def export_table(title: str, rows: list[dict[str, Any]]) -> str:
    from .common import table

    return table(
        title,
        ["mesh", "format", "ours s", "ours, first run s", "trimesh s", "speedup"],
        [
            [r["mesh"], r["format"], r["export_s"], r["export_runs_s"][0], r["trimesh_s"], f"{r['speedup']:.1f}x"]
            for r in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu-dev"))
    parser.add_argument("--repeats", type=int, default=3, help="runs of our writers per mesh and format (fastest kept)")
    parser.add_argument("--trimesh-repeats", type=int, default=1)
    parser.add_argument("--mesh", type=Path, action="append", default=[], help="a saved .npz mesh to add")
    parser.add_argument("--machine-name", default="this CPU machine", help="how the table names the machine")
    parser.add_argument("--subdivisions", type=int, default=SPHERE_SUBDIVISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--large-vertices", type=int, default=LARGE_VERTICES, help=argparse.SUPPRESS)
    parser.add_argument("--previous-mb", type=int, default=PREVIOUS_FILE_MB, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import trimesh

    from .common import machine, write_results

    meshes = synthetic_meshes(args.subdivisions, args.large_vertices)
    for path in args.mesh:
        meshes.update(saved_mesh(path, path.stem))
    rows = export_rows(meshes, args.repeats, args.trimesh_repeats)
    small_name, small = next(iter(meshes.items()))
    overwrite = {"mesh": small_name, **overwrite_cost(small, args.repeats, args.previous_mb)}
    info = {**machine(), "name": args.machine_name, "cpu_count": os.cpu_count()}
    write_results(
        args.out,
        "export",
        {
            "machine": info,
            "trimesh": trimesh.__version__,
            "numpy": np.__version__,
            "repeats": args.repeats,
            "rows": rows,
            "overwrite": overwrite,
        },
    )
    title = f"Mesh export on {args.machine_name} ({os.cpu_count()} CPUs; numpy {np.__version__}, trimesh {trimesh.__version__}; fastest of {args.repeats})"
    text = export_table(title, rows) + (
        f"\nOur OBJ of the {small_name} mesh written over a just-written {overwrite['previous_file_mb']} MB file at the same path: "
        f"{min(overwrite['over_existing_s']):.4f} s (slowest {max(overwrite['over_existing_s']):.4f} s); to a new file: "
        f"{min(overwrite['new_file_s']):.4f} s (slowest {max(overwrite['new_file_s']):.4f} s).\n"
    )
    print(text, flush=True)
    (args.out / "export.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
