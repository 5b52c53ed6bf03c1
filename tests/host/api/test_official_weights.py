"""No program silently gets random weights: the API and the pool start only with the official weights,
and otherwise fail at start with one line naming every place searched and how to get the files.

The worker env without torch is enough: the weights are looked for before torch is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from host import InstantMeshWorker, WeightsMissing, WorkerPool, WorkerStartError
from host.api.arguments import worker_arguments
from tests.conftest import WORKER_PYTHON

pytestmark = pytest.mark.pipe

UNET, LRM = "diffusion_pytorch_model.bin", "instant_mesh_large.ckpt"


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The application's working directory; no weights anywhere, and a worker that starts elsewhere."""
    for name in ("INSTANTMESH_ZERO123PLUS", "INSTANTMESH_UNET", "INSTANTMESH_LRM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    (tmp_path / "app").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\ncd "{elsewhere}" && exec "{WORKER_PYTHON}" "$@"\n')
    wrapper.chmod(0o755)
    return tmp_path / "app"


def _python(app: Path) -> str:
    return str(app.parent / "python")


def test_the_api_defaults_to_the_official_weights_and_names_every_place(app: Path) -> None:
    worker = InstantMeshWorker(_python(app), startup_timeout=60)
    assert worker.client.worker_args[:4] == ["--backend", "instantmesh", "--preset", "official"]
    with pytest.raises(WeightsMissing) as caught:
        worker.start()
    error = caught.value
    assert isinstance(error, WorkerStartError) and error.exit_code == 2
    text = str(error)
    assert "\n" not in text and text.startswith("official weights not found: ")
    for place in (
        "$INSTANTMESH_ZERO123PLUS: not set",
        f"./instantmesh/ckpts: {app / 'instantmesh' / 'ckpts' / 'zero123plus-v1.2'}",
        f"./ckpts: {app / 'ckpts' / UNET}",
        f"./ckpts: {app / 'ckpts' / LRM}",
        f"Hugging Face cache (TencentARC/InstantMesh): {app.parent / 'hf'}",
        "instantmesh-rpc fetch-weights",
    ):
        assert place in text


def test_the_hosts_working_directory_is_searched_wherever_the_worker_starts(app: Path) -> None:
    """Any6D's layout under the host's working directory is found although the worker runs elsewhere:
    only the Zero123++ folder is then reported missing."""
    (app / "instantmesh" / "ckpts").mkdir(parents=True)
    for name in (UNET, LRM):
        (app / "instantmesh" / "ckpts" / name).write_bytes(b"x")
    assert worker_arguments()[-2:] == ["--weights-root", os.getcwd()]
    with pytest.raises(WeightsMissing) as caught:
        InstantMeshWorker(_python(app), startup_timeout=60).start()
    text = str(caught.value)
    assert "Zero123++" in text and UNET not in text.split(" | get them")[0] and LRM not in text


def test_the_pool_fails_the_same_way(app: Path) -> None:
    with pytest.raises(WeightsMissing, match=r"^pool worker 0 \(.*\) could not start: official weights not found: "):
        WorkerPool(_python(app), workers=1, startup_timeout=60).start()


def test_the_mock_needs_no_weights_and_no_preset(app: Path) -> None:
    with InstantMeshWorker(_python(app), backend="mock", startup_timeout=60) as worker:
        assert worker.info.weights == "mock"
