"""The weights at the command line: doctor lists every place looked at; ``--preset official`` fails in one
line; without a preset, batch falls back to the tiny preset and says so."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import HOST_PYTHON, MODELS_PYTHON, ROOT, WORKER_PYTHON

pytestmark = pytest.mark.cli

UNET = "diffusion_pytorch_model.bin"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTMESH_") or k == "INSTANTMESH_RPC_CACHE"}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_CACHE=str(cwd / "hf"))
    return subprocess.run(
        [str(HOST_PYTHON), "-m", "host", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_doctor_lists_every_place_it_looked_for_each_file(tmp_path: Path) -> None:
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / UNET).write_bytes(b"unet")
    text = _cli("doctor", "--python", str(WORKER_PYTHON.parent.parent), cwd=tmp_path).stdout
    lines = text.splitlines()
    unet = lines.index(next(line for line in lines if line.split()[1:3] == ["weights", "unet:"]))
    assert lines[unet].startswith("  ok") and str(tmp_path / "ckpts" / UNET) in lines[unet]
    assert [line.split(". ", 1)[1] for line in lines[unet + 1 : unet + 4]] == [
        "$INSTANTMESH_UNET: not set  missing",
        f"./instantmesh/ckpts: {tmp_path / 'instantmesh' / 'ckpts' / UNET}  missing",
        f"./ckpts: {tmp_path / 'ckpts' / UNET}  found",
    ]
    lrm = next(line for line in lines if line.split()[1:3] == ["weights", "lrm:"])
    assert lrm.startswith("warn") and "get it: instantmesh-rpc fetch-weights" in lrm
    assert f"4. Hugging Face cache (TencentARC/InstantMesh): {tmp_path / 'hf'}" in text

    report = json.loads(_cli("doctor", "--json", "--python", str(WORKER_PYTHON), cwd=tmp_path).stdout)["report"]
    files = {entry["name"]: entry for entry in report["weights"]["files"]}
    assert files["unet"]["path"] == str(tmp_path / "ckpts" / UNET)
    assert [(p["source"], p["found"]) for p in files["unet"]["places"]] == [
        ("$INSTANTMESH_UNET", False),
        ("./instantmesh/ckpts", False),
        ("./ckpts", True),
    ]
    assert files["zero123plus"]["path"] is None and len(files["zero123plus"]["places"]) == 4


def test_batch_with_preset_official_fails_in_one_line(tmp_path: Path) -> None:
    image = ROOT / "examples" / "inputs" / "ball.png"
    out = _cli("batch", str(image), "--out", "o", "--python", str(WORKER_PYTHON), "--preset", "official", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the worker could not start: official weights not found")
    assert f"./ckpts: {tmp_path / 'ckpts' / UNET}" in errors[0]
    assert "Traceback" not in out.stderr and "worker stderr" not in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr  # the run is refused: no table, no list of failed objects


@pytest.mark.models
@pytest.mark.slow
def test_batch_without_a_preset_falls_back_to_the_labelled_tiny_preset(tmp_path: Path, tiny_cache: Path) -> None:
    image = ROOT / "examples" / "inputs" / "ball.png"
    out = _cli(
        "batch",
        str(image),
        "--out",
        "o",
        "--python",
        str(MODELS_PYTHON),
        "--device",
        "cpu",
        "--steps",
        "1",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "model: tiny (random weights, NOT the official models" in out.stdout
    assert "the official weights were not found, so the tiny preset runs: `instantmesh-rpc fetch-weights`" in out.stdout
    assert "1 ok" in out.stdout
