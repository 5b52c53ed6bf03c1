"""End to end through a real worker on the tiny preset: image -> views -> OBJ, GLB, PLY and a texture map.

scripts/test.sh runs this in the Python 3.10 env with upstream InstantMesh's pins (torch 2.1.0, diffusers
0.20.2, transformers 4.34.1) as well as in the project's models env; the worker is the models python.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MODELS_PYTHON

pytestmark = [pytest.mark.models, pytest.mark.upstream, pytest.mark.slow]


def test_views_then_every_mesh_format(tmp_path: Path, object_png: Path, tiny_cache: Path) -> None:
    if not MODELS_PYTHON.exists():
        pytest.fail(f"{MODELS_PYTHON} missing: run scripts/setup.sh")
    from host import InstantMeshWorker

    with InstantMeshWorker(str(MODELS_PYTHON), preset="tiny", device="cpu", startup_timeout=300) as worker:
        info = worker.info
        assert "tiny" in info.model_label
        views = worker.generate_views(object_png, num_inference_steps=2, save_grid=tmp_path / "views.png")
        assert Path(views.grid_path or "").is_file() and views.grid_size == (2 * views.view_size, 3 * views.view_size)
        for fmt in ("obj", "glb", "ply"):
            mesh = worker.reconstruct(views, tmp_path / f"mesh.{fmt}")
            assert mesh.format == fmt and mesh.num_faces > 0 and Path(mesh.path).stat().st_size > 0
        if "texture_map" in info.capabilities:
            textured = worker.reconstruct(views, tmp_path / "textured.obj", texture_map=True)
            assert sorted(Path(p).suffix for p in textured.extra_paths) == [".mtl", ".png"]
