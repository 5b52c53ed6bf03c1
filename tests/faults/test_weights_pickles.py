"""Pickled weights in the Zero123++ folder: a component saved only as a pickle is refused in one line at start and
at load, and a pickle beside safetensors is never opened, by the real worker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import MODELS_PYTHON
from tests.pickle_plant import plant_pickle

from .conftest import RawWorker, error_name

pytestmark = [pytest.mark.faults, pytest.mark.models, pytest.mark.upstream]

CALL_TIMEOUT_S = 120
"""A start or load of the tiny views on the CPU, with other jobs sharing the cores."""
PICKLE_NAMES = {"vae": "diffusion_pytorch_model.bin", "text_encoder": "pytorch_model.bin"}
"""Where diffusers and transformers would look for a pickle when a component has no safetensors."""


@pytest.fixture(scope="module")
def tiny(tiny_cache: Path):
    pytest.importorskip("torch")
    if not MODELS_PYTHON.exists():
        pytest.fail(f"{MODELS_PYTHON} missing: run scripts/setup.sh")
    from instantmesh.tiny import ensure_tiny_weights

    return ensure_tiny_weights()


def worker_args(tiny, folder: Path) -> list[str]:
    """The real backend on the CPU with the official preset's checks, given the tiny files as its weights."""
    return [
        "--backend", "instantmesh", "--device", "cpu", "--zero123plus", str(folder),
        "--unet", str(tiny.paths.whitebg_unet), "--lrm", str(tiny.paths.lrm), "--config", str(tiny.config),
    ]  # fmt: skip


def test_a_component_saved_only_as_a_pickle_ends_the_start_in_one_line(tiny, tmp_path: Path) -> None:
    """A Zero123++ folder whose text encoder is only a pickle: the worker exits 2 at start and the host raises
    WeightsMissing, one line naming the component's folder and `instantmesh-rpc fetch-weights`; the pickle is never
    unpickled."""
    from host import WeightsMissing
    from host.worker.client import WorkerClient
    from host.worker.process import WorkerCommand

    folder = Path(shutil.copytree(tiny.paths.zero123plus, tmp_path / "zero123plus"))
    (folder / "text_encoder" / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    plant_pickle(folder / "text_encoder" / PICKLE_NAMES["text_encoder"], marker)
    client = WorkerClient(WorkerCommand.python(MODELS_PYTHON), worker_args(tiny, folder), startup_timeout=60)
    try:
        with pytest.raises(WeightsMissing) as caught:
            client.start()
    finally:
        client.close(timeout=5)
    text = str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in text
    assert f"{folder / 'text_encoder'} has its weights only as pickles (pytorch_model.bin)" in text
    assert "`instantmesh-rpc fetch-weights`" in text
    assert not marker.exists(), "a pickle was unpickled"


def test_pickles_are_never_opened_at_load_and_a_component_left_with_one_is_refused(tiny, tmp_path: Path) -> None:
    """Pickles planted beside the safetensors of the VAE and the text encoder: `load` of the views succeeds without
    unpickling them. With the VAE's safetensors then gone, a new `load` gets model_not_loaded (-32020), one line
    naming the component and `instantmesh-rpc fetch-weights`, nothing unpickled, and the worker serves on."""
    folder = Path(shutil.copytree(tiny.paths.zero123plus, tmp_path / "zero123plus"))
    marker = tmp_path / "unpickled"
    for component, name in PICKLE_NAMES.items():
        plant_pickle(folder / component / name, marker)
    worker = RawWorker(*worker_args(tiny, folder), python=MODELS_PYTHON)
    try:
        worker.call("initialize", {"protocol_version": "1.0", "client": "fault-suite"}, timeout=CALL_TIMEOUT_S)
        loaded = worker.call("load", {"models": ["views"]}, timeout=CALL_TIMEOUT_S)
        assert error_name(loaded) == "ok" and loaded["result"]["loaded"] == ["views"], loaded
        assert not marker.exists(), "a pickle beside safetensors was unpickled"

        assert error_name(worker.call("unload", {"models": ["views"]})) == "ok"
        (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
        refused = worker.call("load", {"models": ["views"]}, timeout=CALL_TIMEOUT_S)
        assert error_name(refused) == "model_not_loaded", refused
        message = refused["error"]["message"]
        assert "\n" not in message and refused["error"]["data"]["model"] == "views"
        assert f"{folder / 'vae'} has its weights only as pickles (diffusion_pytorch_model.bin)" in message
        assert "`instantmesh-rpc fetch-weights`" in message
        assert not marker.exists(), "a pickle was unpickled"
        assert error_name(worker.call("status")) == "ok"
    finally:
        assert worker.close() == 0
