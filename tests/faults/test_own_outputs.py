"""Inputs are never outputs: a run refuses, before any work and in one line, an output that is (or leads to) one of
its inputs; no run reads an earlier run's outputs as inputs; and a pool's redo of an object whose mesh a lost worker
finished is a success. The batch CLI and the API over real pipes, the worker under Python 3.10."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.host.cli.test_batch import EXAMPLES, row, run_batch

pytestmark = pytest.mark.faults


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("mug.png", "ball.png"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def test_a_texture_over_its_own_photo_is_refused_even_with_overwrite(worker_python: Path, photos: Path) -> None:
    """`batch photos --out photos --texture-map --overwrite`: each OBJ's texture NAME.png would replace the photo
    NAME.png, so the run is refused before the worker starts, in one line naming the file and what it is
    (exit code 2), and every photo is untouched."""
    before = digests(photos)
    done = run_batch(worker_python, photos, "--out", photos, "--texture-map", "--overwrite", "--steps", "2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "ball.png, the texture file of ball, is an input of this run" in done.stderr
    assert "starting the worker" not in done.stdout
    assert digests(photos) == before


@pytest.mark.parametrize("how", ["same-name", "symlink", "hard-link"])
def test_an_output_that_is_or_leads_to_an_input_is_refused(
    worker_python: Path, photos: Path, tmp_path: Path, how: str
) -> None:
    """A photo named like another object's output (``mug_input.png`` beside ``mug.png``, no mesh yet), or an
    output name in --out that is a symlink or a hard link to one of the photos: refused before any work in one
    line naming both, nothing written, the photos untouched."""
    out = photos
    if how == "same-name":
        shutil.copy(EXAMPLES / "box.png", photos / "mug_input.png")
    else:
        out = tmp_path / "out"
        out.mkdir()
        link = out / "mug_sheet.png"
        link.symlink_to(photos / "ball.png") if how == "symlink" else os.link(photos / "ball.png", link)
    before = digests(photos)
    done = run_batch(worker_python, photos, "--out", out, "--contact-sheet", "--steps", "2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    if how == "same-name":
        assert "mug_input.png, the prepared input of mug, is an input of this run" in done.stderr
    else:
        assert "mug_sheet.png, the contact sheet of mug, is an input of this run" in done.stderr
        assert "ball.png" in done.stderr
    assert digests(photos) == before
    assert not any(p.suffix == ".obj" for p in out.iterdir())


def test_a_run_in_its_own_input_folder_never_reads_its_outputs(worker_python: Path, photos: Path) -> None:
    """`batch photos --out photos` twice, then with every file named (as a shell glob gives them), then with
    --overwrite: the same two objects every time, the earlier outputs left out with a note, the photos untouched."""
    before = digests(photos)
    first = run_batch(worker_python, photos, "--out", photos, "--contact-sheet", "--steps", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 ok" in first.stdout
    outputs = {f"{n}{e}" for n in ("mug", "ball") for e in (".obj", "_input.png", "_views.png", "_sheet.png")}
    assert set(digests(photos)) == set(before) | outputs

    again = run_batch(worker_python, photos, "--out", photos, "--steps", "2")
    assert again.returncode == 0 and "2 object(s)" in again.stdout and "2 skipped" in again.stdout, again.stdout
    assert "6 file(s) written by an earlier run left out" in again.stderr

    named = run_batch(worker_python, *sorted(photos.glob("*.png")), "--out", photos, "--steps", "2")
    assert named.returncode == 0 and "2 object(s)" in named.stdout, named.stdout + named.stderr
    assert named.stderr.count("left out: an earlier run wrote it") == 6

    redo = run_batch(worker_python, photos, "--out", photos, "--overwrite", "--steps", "2")
    assert redo.returncode == 0 and [row(redo.stdout, n)[1] for n in ("ball", "mug")] == ["ok", "ok"]
    assert {name: value for name, value in digests(photos).items() if name in before} == before


def test_map_refuses_an_output_on_its_own_image_before_any_request(worker_python: Path, photos: Path) -> None:
    """`InstantMeshWorker.map` and `WorkerPool.map` with texture_map=True into the photos' own folder (overwrite
    on): OutputIsAnInput, one line naming the photo, raised before any request; the photos untouched."""
    from host import InstantMeshWorker, OutputIsAnInput, WorkerPool

    before = digests(photos)
    images = [photos / "mug.png", photos / "ball.png"]
    with InstantMeshWorker(str(worker_python), backend="mock", prepare=False) as worker:
        served = worker.status().requests_served
        with pytest.raises(OutputIsAnInput) as info:
            worker.map(images, photos, texture_map=True, overwrite=True)
        assert "mug.png, the texture file of mug, is an input of this run" in str(info.value)
        assert "\n" not in str(info.value)
        assert worker.status().requests_served == served + 1, "only the status call itself reached the worker"
    with WorkerPool(str(worker_python), backend="mock", workers=1, prepare=False) as pool:
        with pytest.raises(OutputIsAnInput):
            pool.map(images, photos, texture_map=True, overwrite=True)
        assert pool.status()[0].requests_done == 0
    assert digests(photos) == before


def test_a_pool_redo_of_an_object_whose_mesh_its_lost_worker_wrote_succeeds(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    """A pool worker writes an object's mesh (textured OBJ: .mtl, .png, .obj) and dies before answering: the
    object is redone on the other worker, which replaces those files, so it succeeds (attempts 2). A mesh that
    was there before the map started is never replaced by a redo: that object fails with `exists`, untouched."""
    from host import WorkerPool

    marker, out = tmp_path / "died-once", tmp_path / "out"
    out.mkdir()
    (out / "kept.obj").write_text("someone's mesh\n")
    options = f"view_size=64,exit_after_write_once={marker}"
    with WorkerPool(str(worker_python), backend="mock", workers=2, worker_args=["--mock", options]) as pool:
        outcomes = sorted(
            pool.map([object_png, object_png], out, names=["redone", "kept"], texture_map=True, num_inference_steps=2),
            key=lambda outcome: outcome.index,
        )
    redone, kept = outcomes
    assert marker.exists(), "the mock worker never died after its write"
    assert redone.ok and redone.attempts == 2, redone
    assert all((out / f"redone{ext}").stat().st_size > 0 for ext in (".obj", ".mtl", ".png"))
    assert (out / "redone.obj").read_text().count("\nf ") == redone.mesh.num_faces
    assert not kept.ok and kept.error_code == "output_refused" and "exists" in (kept.error or "")
    assert (out / "kept.obj").read_text() == "someone's mesh\n"
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == ["kept.obj", "kept_views.png", "redone.mtl", "redone.obj", "redone.png", "redone_views.png"]
