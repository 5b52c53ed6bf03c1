"""Outputs are written to a hidden temporary file and moved into place: a crash never leaves a truncated
file at the output path, and an existing file is replaced only with overwrite=true."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from host.worker.errors import WorkerCrashed
from rpcworker.wire.errors import OutputRefused
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ReconstructParams, ViewsGridPath

from .conftest import wait_gone

pytestmark = pytest.mark.faults


def partials(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if ".partial-" in p.name]


def wait_for_partial(directory: Path, timeout: float = 10.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = partials(directory)
        if found:
            return found[0]
        time.sleep(0.01)
    pytest.fail("the worker never started writing its temporary file")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _start(client, method: str, object_png: Path, grid: Path, target: Path, overwrite: bool):
    if method == "generate_views":
        return client.request(
            "generate_views",
            GenerateViewsParams(
                ImagePath(str(object_png)), num_inference_steps=1, output_path=str(target), overwrite=overwrite
            ),
        )
    return client.request("reconstruct", ReconstructParams(ViewsGridPath(str(grid)), str(target), overwrite=overwrite))


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "overwrite"])
@pytest.mark.parametrize("method", ["generate_views", "reconstruct"])
def test_sigkill_during_the_write_never_truncates_the_output(
    mock_client, object_png: Path, tmp_path: Path, method: str, existing: bool
) -> None:
    """SIGKILL while the output sits finished-but-unmoved at its temporary path (mock write_delay): the
    output path is absent (new file) or byte-identical to the old file (overwrite=true); the only debris
    is the hidden `.NAME.partial-PID-RAND.EXT` file. A new worker then writes the complete file, and
    removes that debris once it is stale (its writer's pid is gone and it is older than a few seconds)."""
    out = tmp_path / "out"
    out.mkdir()
    grid = tmp_path / "grid.png"
    helper = mock_client()
    helper.generate_views(GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1, output_path=str(grid)))
    target = out / ("grid.png" if method == "generate_views" else "mesh.obj")
    if existing:
        target.write_bytes(b"the old, complete file\n" * 100)
    before = digest(target) if existing else None

    client = mock_client("write_delay=30")
    pending = _start(client, method, object_png, grid, target, overwrite=existing)
    temp = wait_for_partial(out)
    assert temp.name.startswith(f".{target.stem}.partial-{client.process.pid}-") and temp.suffix == target.suffix
    os.kill(client.process.pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed):
        pending.result(10)
    assert wait_gone(client.process.pid, 2.0)
    if existing:
        assert digest(target) == before, "the old file must survive a crash during its replacement"
    else:
        assert not target.exists(), "a crash must not leave a file at the output path"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ([target.name] if existing else [])
    assert partials(out) == [temp]
    os.utime(temp, (time.time() - 60, time.time() - 60))

    result = _start(helper, method, object_png, grid, target, overwrite=True).result(10)
    assert target.exists() and target.stat().st_size > 0
    assert partials(out) == [], "the killed writer's stale temporary file must go with the next write of the target"
    if method == "generate_views":
        from PIL import Image

        with Image.open(target) as img:
            img.load()
            assert img.size == (result.grid_width, result.grid_height)
    else:
        assert target.read_text().count("\nf ") == result.num_faces


def test_existing_file_is_replaced_only_with_overwrite(mock_client, object_png: Path, tmp_path: Path) -> None:
    """overwrite=false leaves an existing file byte-identical (output_refused, reason exists);
    overwrite=true replaces it; neither leaves a temporary file behind."""
    client = mock_client()
    target = tmp_path / "grid.png"
    target.write_bytes(b"precious")
    params = dict(image=ImagePath(str(object_png)), num_inference_steps=1, output_path=str(target))
    with pytest.raises(OutputRefused) as info:
        client.generate_views(GenerateViewsParams(**params))
    assert info.value.data["reason"] == "exists" and target.read_bytes() == b"precious"
    client.generate_views(GenerateViewsParams(**params, overwrite=True))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert partials(tmp_path) == []


def test_file_appearing_during_the_write_is_not_clobbered(mock_client, object_png: Path, tmp_path: Path) -> None:
    """A file created at the output path after the worker checked it but before the write finished
    (overwrite=false): the worker refuses (output_refused, reason exists) instead of replacing it, and
    removes its temporary file."""
    client = mock_client("write_delay=0.5")
    target = tmp_path / "grid.png"
    pending = client.request(
        "generate_views",
        GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1, output_path=str(target)),
    )
    wait_for_partial(tmp_path)
    target.write_bytes(b"someone else's file")
    with pytest.raises(OutputRefused) as info:
        pending.result(10)
    assert info.value.data["reason"] == "exists"
    assert target.read_bytes() == b"someone else's file"
    assert partials(tmp_path) == []


def test_unwritable_output_location_is_refused_cleanly(mock_client, object_png: Path, tmp_path: Path) -> None:
    """An output whose parent is a regular file (a directory cannot be made): output_refused, nothing
    written anywhere, and the worker keeps serving."""
    client = mock_client()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputRefused):
        client.generate_views(
            GenerateViewsParams(
                ImagePath(str(object_png)), num_inference_steps=1, output_path=str(tmp_path / "file" / "grid.png")
            )
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "object.png"]
    assert client.ping().pong
