"""A textured OBJ is three files (NAME.obj, NAME.mtl, NAME.png): the output rules hold for each of them,
and a refused or failed write leaves none of them behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpcworker.wire.errors import OutputRefused
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ReconstructParams, ViewsGridPath

from .test_output_safety import partials, wait_for_partial

pytestmark = pytest.mark.faults


@pytest.fixture()
def grid(mock_client, object_png: Path, tmp_path: Path) -> Path:
    path = tmp_path / "grid.png"
    mock_client().generate_views(
        GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1, output_path=str(path))
    )
    return path


def _textured(grid: Path, target: Path, overwrite: bool = False) -> ReconstructParams:
    return ReconstructParams(ViewsGridPath(str(grid)), str(target), texture_map=True, overwrite=overwrite)


@pytest.mark.parametrize("companion", ["mesh.mtl", "mesh.png"])
def test_an_existing_companion_is_refused_without_overwrite(
    mock_client, grid: Path, tmp_path: Path, companion: str
) -> None:
    """output_refused (reason exists) naming the companion; nothing is written, the file is untouched;
    overwrite=true then replaces it and writes the rest."""
    out = tmp_path / "out"
    out.mkdir()
    (out / companion).write_bytes(b"precious")
    client = mock_client()
    with pytest.raises(OutputRefused) as info:
        client.reconstruct(_textured(grid, out / "mesh.obj"))
    assert info.value.data["reason"] == "exists" and info.value.data["path"] == str(out / companion)
    assert [p.name for p in out.iterdir()] == [companion] and (out / companion).read_bytes() == b"precious"
    mesh = client.reconstruct(_textured(grid, out / "mesh.obj", overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["mesh.mtl", "mesh.obj", "mesh.png"]
    assert (out / companion).read_bytes() != b"precious" and mesh.extra_paths[-1] == str(out / "mesh.png")


def test_a_companion_appearing_during_the_write_rolls_back_the_whole_set(
    mock_client, grid: Path, tmp_path: Path
) -> None:
    """The .png appears after the checks, while the finished .mtl waits to be moved (write_delay): the
    worker refuses, takes back the .mtl it had already put in place, never writes the .obj, leaves the
    other writer's .png alone and removes its temporary files."""
    out = tmp_path / "out"
    out.mkdir()
    client = mock_client("write_delay=0.4")
    pending = client.request("reconstruct", _textured(grid, out / "mesh.obj"))
    wait_for_partial(out)
    (out / "mesh.png").write_bytes(b"someone else's texture")
    with pytest.raises(OutputRefused) as info:
        pending.result(10)
    assert info.value.data["reason"] == "exists" and info.value.data["path"] == str(out / "mesh.png")
    assert [p.name for p in out.iterdir()] == ["mesh.png"]
    assert (out / "mesh.png").read_bytes() == b"someone else's texture"
    assert partials(out) == []
