"""The export benchmark end to end on small meshes: every mesh and format timed, JSON and table written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trimesh")


def test_export_benchmark_writes_every_mesh_and_format(tmp_path: Path) -> None:
    from benchmarks import export

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "extracted.npz",
        vertices=rng.normal(size=(30, 3)).astype(np.float32),
        faces=rng.integers(0, 30, (60, 3)),
        colors=rng.integers(0, 256, (30, 3)).astype(np.uint8),
    )
    out = tmp_path / "results"
    code = export.main(
        [
            "--out",
            str(out),
            "--repeats",
            "2",
            "--subdivisions",
            "1",
            "--large-vertices",
            "500",
            "--previous-mb",
            "1",
            "--mesh",
            str(tmp_path / "extracted.npz"),
            "--machine-name",
            "test box",
        ]
    )
    assert code == 0
    saved = json.loads((out / "export.json").read_text())
    assert saved["machine"]["name"] == "test box"
    meshes = ["~0k faces (42 vertices)", "0.0005M vertices, 0.001M faces", "extracted (30 vertices)"]
    assert [(r["mesh"], r["format"]) for r in saved["rows"]] == [(m, f) for m in meshes for f in export.FORMATS]
    assert all(len(r["export_runs_s"]) == 2 and r["export_s"] == min(r["export_runs_s"]) > 0 for r in saved["rows"])
    assert len(saved["overwrite"]["over_existing_s"]) == len(saved["overwrite"]["new_file_s"]) == 2
    table = (out / "export.md").read_text()
    assert (
        "Mesh export on test box" in table
        and "| extracted (30 vertices) | glb |" in table
        and "just-written 1 MB file" in table
    )
