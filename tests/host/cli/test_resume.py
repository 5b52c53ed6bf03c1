"""The batch's resume rule for what stands at an object's mesh name (host.cli.resume)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from host.cli.resume import mesh_problem


@pytest.mark.parametrize("overwrite", [False, True])
def test_nothing_or_a_readable_mesh_is_no_problem(tmp_path: Path, overwrite: bool) -> None:
    mesh = tmp_path / "mug.obj"
    assert mesh_problem(mesh, overwrite) is None
    mesh.write_text("v 0 0 0\n")
    assert mesh_problem(mesh, overwrite) is None
    (tmp_path / "dangling.obj").symlink_to(tmp_path / "nowhere")
    assert mesh_problem(tmp_path / "dangling.obj", overwrite) is None  # no mesh yet: the object is made


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_or_a_fifo_is_the_objects_failure_overwrite_or_not(tmp_path: Path, overwrite: bool) -> None:
    """Never replaced, so never skipped to either: one line naming the path."""
    folder = tmp_path / "mug.obj"
    folder.mkdir()
    assert mesh_problem(folder, overwrite) == f"{folder} is a directory, where the mesh should be written"
    fifo = tmp_path / "box.obj"
    os.mkfifo(fifo)
    problem = mesh_problem(fifo, overwrite)  # checked without opening it: a FIFO would block the batch
    assert problem is not None and problem.startswith(f"{fifo} exists and is not a regular file")
