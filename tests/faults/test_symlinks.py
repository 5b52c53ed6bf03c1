"""The output root and ``--out`` hold when files are written, not only when paths are checked: a folder swapped
for a symlink between the worker's check and its write sends nothing outside the root, and a symlink planted in
``--out`` is never written through by the batch or its report. Over real pipes, the worker under Python 3.10."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.host.cli.test_batch import EXAMPLES, run_batch

from .conftest import RawWorker, error_name

pytestmark = pytest.mark.faults


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def every_file(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())


def wait_for_progress(worker: RawWorker, stage: str) -> None:
    """Until the worker says the request's model work has begun (its outputs were checked before that)."""
    while True:
        message: dict[str, Any] = msgspec.json.decode(worker.read_line(10))
        if message.get("method") == "progress" and message["params"]["stage"] == stage:
            return
        assert "method" in message, f"a reply came before the model work began: {message}"


@pytest.mark.parametrize(
    ("method", "leads"), [("reconstruct", "outside"), ("reconstruct", "inside"), ("generate_views", "outside")]
)
def test_a_folder_swapped_for_a_symlink_after_the_check_cannot_send_a_file_outside_the_root(
    raw_worker, object_png: Path, tmp_path: Path, method: str, leads: str
) -> None:
    """With --output-root, the output's folder is replaced by a symlink while the model works (after the path was
    checked): leading outside the root, the request gets `output_refused` (reason "outside output root") and
    nothing is written anywhere, no temporary file either; leading to another folder inside the root, the file
    is written there. The worker keeps serving."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    outside.mkdir()
    worker: RawWorker = raw_worker("--output-root", str(root), "--mock", "reconstruct_delay=1,step_delay=0.2")
    image = {"type": "path", "path": str(object_png)}
    handle = worker.call("generate_views", {"image": image, "num_inference_steps": 1})["result"]["handle"]
    if method == "reconstruct":
        target = root / "sub" / "m.obj"
        params = {"views": {"type": "handle", "handle": handle}, "output_path": str(target)}
        stage = "reconstruct"
    else:
        target = root / "sub" / "grid.png"
        params = {"image": image, "num_inference_steps": 3, "output_path": str(target)}
        stage = "diffusion"
    worker.send({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
    wait_for_progress(worker, stage)
    (root / "sub").rename(root / "moved")
    (root / "sub").symlink_to(outside if leads == "outside" else root / "elsewhere")
    reply = worker.reply(10)
    assert reply["id"] == 7
    if leads == "outside":
        assert error_name(reply) == "output_refused", reply
        assert reply["error"]["data"]["reason"] == "outside output root"
        assert every_file(outside) == []
        assert every_file(root) == ["sub"], "nothing written inside the root either, no temporary file left"
    else:
        assert error_name(reply) == "ok", reply
        assert every_file(root) == [f"elsewhere/{target.name}", "sub"]
    assert error_name(worker.call("ping")) == "ok"


def test_the_batch_and_its_report_never_write_through_symlinks_planted_in_out(
    worker_python: Path, tmp_path: Path
) -> None:
    """Symlinks planted in --out where the host writes its own files (the prepared input, the page, the report's
    viewer and mesh script) are replaced by the files, and what they pointed at is untouched; a symlink where the
    worker would write (a views grid) is refused before any work, in one line."""
    photos, out, outside = tmp_path / "photos", tmp_path / "out", tmp_path / "outside"
    for folder in (photos, out / "report", outside):
        folder.mkdir(parents=True)
    (photos / "mug.png").write_bytes((EXAMPLES / "mug.png").read_bytes())
    victims = {}
    for planted in ("mug_input.png", "index.html", "report/model-viewer-umd.min.js", "report/mug.glb.js"):
        victim = outside / planted.replace("/", "-")
        victim.write_text(f"victim of {planted}")
        (out / planted).symlink_to(victim)
        victims[victim] = digest(victim)

    # A symlink at index.html is no report of ours: it is replaced only with --overwrite (host.cli.report).
    done = run_batch(worker_python, photos, "--out", out, "--steps", "2", "--report", "--overwrite")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {victim: digest(victim) for victim in victims} == victims, "a file outside --out was written through"
    assert sorted(p.name for p in outside.iterdir()) == sorted(v.name for v in victims)
    for planted in ("mug_input.png", "index.html", "report/model-viewer-umd.min.js", "report/mug.glb.js"):
        assert not (out / planted).is_symlink() and (out / planted).stat().st_size > 0, planted

    (out / "mug.obj").unlink()
    (out / "mug_views.png").unlink()
    (out / "mug_views.png").symlink_to(outside / "grid-victim.png")
    refused = run_batch(worker_python, photos, "--out", out, "--steps", "2")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "mug_views.png is a symlink" in refused.stderr, refused.stderr
    assert "starting the worker" not in refused.stdout
    assert not (outside / "grid-victim.png").exists()


def test_a_report_folder_that_is_a_symlink_is_refused_before_any_work(worker_python: Path, tmp_path: Path) -> None:
    """``OUT/report`` a symlink to a folder elsewhere: `batch --report` is refused in one line before the worker
    starts (exit code 2), and nothing is written in the folder it points at."""
    photos, out, outside = tmp_path / "photos", tmp_path / "out", tmp_path / "outside"
    for folder in (photos, out, outside):
        folder.mkdir()
    (photos / "mug.png").write_bytes((EXAMPLES / "mug.png").read_bytes())
    (out / "report").symlink_to(outside, target_is_directory=True)
    done = run_batch(worker_python, photos, "--out", out, "--report")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "report is a symlink" in done.stderr, done.stderr
    assert os.listdir(outside) == [] and sorted(os.listdir(out)) == ["report"]
