"""The Zero123++ components that diffusers and transformers load come from safetensors only: a component saved
only as a pickle is refused in one line before any loader runs, and a pickle beside safetensors is never opened.

Marked ``upstream``: scripts/test.sh runs it again under upstream's pins (diffusers 0.20.2, transformers 4.34.1,
torch 2.1), whose ``from_pretrained`` would unpickle a ``.bin`` without ``weights_only``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from instantmesh.safetensors_only import PickledWeights  # noqa: E402
from instantmesh.tiny import TinyWeights, ensure_tiny_weights  # noqa: E402
from instantmesh.weights_check import check_zero123plus  # noqa: E402
from instantmesh.zero123plus.loading import load_zero123plus  # noqa: E402
from tests.pickle_plant import plant_pickle  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]

PICKLE_NAMES = {
    "unet": "diffusion_pytorch_model.bin",
    "vae": "diffusion_pytorch_model.bin",
    "text_encoder": "pytorch_model.bin",
    "vision_encoder": "pytorch_model.bin",
}
"""The pickle each component's library would fall back to: diffusers' and transformers' names."""


@pytest.fixture(scope="module")
def tiny(tiny_cache: Path) -> TinyWeights:
    return ensure_tiny_weights()


@pytest.fixture()
def folder(tiny: TinyWeights, tmp_path: Path) -> Path:
    """A copy of the tiny preset's Zero123++ folder (every component in safetensors)."""
    return Path(shutil.copytree(tiny.paths.zero123plus, tmp_path / "zero123plus"))


@pytest.mark.parametrize("component", sorted(PICKLE_NAMES))
def test_a_component_saved_only_as_a_pickle_is_refused_in_one_line(
    component: str, folder: Path, tiny: TinyWeights, tmp_path: Path
) -> None:
    """The loader (and for the weights it reads, fetch-weights' check) refuses it before unpickling anything, in one
    line naming the component's folder, its pickle and the command that fetches safetensors. The folder's UNet is
    read only without the white-background UNet, so its case loads without one."""
    for weights in (folder / component).glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "unpickled"
    plant_pickle(folder / component / PICKLE_NAMES[component], marker)
    with pytest.raises(PickledWeights) as caught:
        load_zero123plus(folder, None if component == "unet" else tiny.paths.whitebg_unet)
    text = str(caught.value)
    assert "\n" not in text
    assert f"component {folder / component} has its weights only as pickles ({PICKLE_NAMES[component]})" in text
    assert "`instantmesh-rpc fetch-weights`" in text
    if component != "unet":
        with pytest.raises(PickledWeights, match="has its weights only as pickles"):
            check_zero123plus(folder)
    assert not marker.exists(), "a pickle was unpickled"


def test_a_pickle_beside_safetensors_is_never_opened(folder: Path, tiny: TinyWeights, tmp_path: Path) -> None:
    """Every component with a pickle planted beside its safetensors (and an fp16 one, the variant a float16 load
    may ask for): the folder loads in float32 with its own UNet and in float16 with the white-background UNet,
    passes fetch-weights' check, and the pickles are never unpickled."""
    marker = tmp_path / "unpickled"
    for component, name in PICKLE_NAMES.items():
        plant_pickle(folder / component / name, marker)
        plant_pickle(folder / component / name.replace(".bin", ".fp16.bin"), marker)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert load_zero123plus(folder).networks.vae.dtype == torch.float32
        assert (
            load_zero123plus(folder, tiny.paths.whitebg_unet, dtype=torch.float16).networks.vae.dtype == torch.float16
        )
        assert "weights hold the parameters of their configs" in check_zero123plus(folder)
    finally:
        torch.set_num_threads(threads)
    assert not marker.exists(), "a pickle beside safetensors was unpickled"
