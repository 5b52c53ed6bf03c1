"""The check ``fetch-weights`` runs after a download: right files pass, a file cut short or of another model fails,
and the pickles' tensors are mapped, not read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from instantmesh.tiny import TinyWeights, ensure_tiny_weights  # noqa: E402
from instantmesh.weights_check import check_lrm, check_whitebg_unet, check_zero123plus  # noqa: E402
from instantmesh.weights_file import CheckpointError, load_weights_file  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]


@pytest.fixture(scope="module")
def tiny(tiny_cache: Path) -> TinyWeights:
    return ensure_tiny_weights()


def _cut(source: Path, target: Path, missing: int) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes()[:-missing])
    return target


def test_the_tiny_files_pass_and_say_what_was_checked(tiny: TinyWeights) -> None:
    folder = tiny.paths.zero123plus
    assert "model_index.json names its 8 components" in check_zero123plus(folder)
    assert "the keys and shapes of the UNet" in check_whitebg_unet(tiny.paths.whitebg_unet, folder)
    assert check_lrm(tiny.paths.lrm, tiny.config).endswith("the keys and shapes of the LRM in tiny.yaml")


def test_files_cut_short_are_refused(tiny: TinyWeights, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny.paths.zero123plus, tmp_path / "zero123plus")
    _cut(tiny.paths.zero123plus / "vae" / "diffusion_pytorch_model.safetensors", folder / "vae" / "x", 1)
    (folder / "vae" / "x").replace(folder / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match="an incomplete file"):
        check_zero123plus(folder)
    unet = _cut(tiny.paths.whitebg_unet, tmp_path / "unet.bin", 100)
    with pytest.raises(CheckpointError, match="not a complete torch file"):
        check_whitebg_unet(unet, tiny.paths.zero123plus)


def test_weights_of_another_model_are_refused(tiny: TinyWeights, tmp_path: Path) -> None:
    state = torch.load(tiny.paths.whitebg_unet, weights_only=True)
    state.pop(sorted(state)[0])
    torch.save(state, tmp_path / "unet.bin")
    with pytest.raises(CheckpointError, match="does not match the UNet"):
        check_whitebg_unet(tmp_path / "unet.bin", tiny.paths.zero123plus)
    large = Path(__file__).resolve().parents[2] / "instantmesh" / "configs" / "instant-mesh-large.yaml"
    with pytest.raises(CheckpointError, match="weights do not match the model"):
        check_lrm(tiny.paths.lrm, large)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's memory map (Linux)")
def test_a_mapped_pickle_reads_no_tensor(tiny: TinyWeights) -> None:
    """The tensors of ``mmap=True`` lie in the file's mapped pages: nothing is copied into memory to check keys and
    shapes, so checking a 3 GB UNet costs what its pickle's index does."""
    state = load_weights_file(tiny.paths.whitebg_unet, mmap=True)
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(tiny.paths.whitebg_unet.resolve()):
            start, end = (int(n, 16) for n in fields[0].split("-"))
            mapped.append(range(start, end))
    assert mapped and all(any(t.data_ptr() in r for r in mapped) for t in state.values() if t.numel())
