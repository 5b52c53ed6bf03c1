"""Zero123++ loading: full-size architecture facts, strict white-background UNet loading, folder layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from instantmesh.safetensors_only import safetensors_variant  # noqa: E402
from instantmesh.zero123plus.loading import (  # noqa: E402
    CheckpointError,
    build_zero123plus_models,
    build_zero123plus_unet,
    load_unet_weights,
    load_zero123plus,
    read_model_index,
    read_state_dict,
    write_random_zero123plus_folder,
)

pytestmark = [pytest.mark.models, pytest.mark.upstream]

GOLDEN_ROOT = Path(os.environ.get("INSTANTMESH_GOLDEN", "/work/shared/golden"))
CONFIGS = GOLDEN_ROOT / "zero123plus_v1.2_configs.json"
UNET_KEYS = GOLDEN_ROOT / "zero123plus_unet.keys.json"
TINY = GOLDEN_ROOT / "tiny_zero123plus"
WHITEBG = TINY / "whitebg_unet" / "diffusion_pytorch_model.bin"

needs_golden = pytest.mark.skipif(not CONFIGS.is_file(), reason=f"golden data not found at {GOLDEN_ROOT}")

PUBLISHED_PARAMETERS = {
    "unet": 865_910_724,
    "vae": 83_653_863,
    "text_encoder": 340_387_840,
    "vision_encoder": 632_076_800,
}


# --- full size, on the meta device ---------------------------------------------------------------


@needs_golden
def test_full_size_unet_has_the_whitebg_checkpoint_keys():
    configs = json.loads(CONFIGS.read_text())
    unet = build_zero123plus_unet(configs["unet/config.json"])
    expected = {e["key"]: tuple(e["shape"]) for e in json.loads(UNET_KEYS.read_text())["keys"]}
    actual = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert len(expected) == 686
    assert sorted(actual.keys() - expected.keys()) == []
    assert sorted(expected.keys() - actual.keys()) == []
    assert actual == expected
    assert next(unet.parameters()).device.type == "meta"


@needs_golden
def test_full_size_parameter_counts():
    models = build_zero123plus_models(CONFIGS)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    print(f"[zero123plus] parameter counts {counts}")
    assert counts == PUBLISHED_PARAMETERS


# --- strict white-background UNet loading ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_unet():
    if not TINY.is_dir():
        pytest.skip(f"golden data not found at {TINY}")
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(TINY / "pipeline" / "unet", local_files_only=True)


@pytest.fixture(scope="module")
def whitebg_state_dict(tiny_unet):
    return read_state_dict(WHITEBG)


def test_whitebg_loads_strictly(tiny_unet, whitebg_state_dict):
    load_unet_weights(tiny_unet, WHITEBG)
    for key, value in tiny_unet.state_dict().items():
        assert torch.equal(value, whitebg_state_dict[key]), key


def test_whitebg_safetensors_accepted(tiny_unet, whitebg_state_dict, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "whitebg.safetensors"
    save_file({k: v.contiguous() for k, v in whitebg_state_dict.items()}, str(path))
    load_unet_weights(tiny_unet, path)
    assert torch.equal(tiny_unet.conv_in.weight, whitebg_state_dict["conv_in.weight"])


def test_wrong_key_set_is_reported_with_the_keys_and_file(tiny_unet, whitebg_state_dict, tmp_path):
    broken = dict(whitebg_state_dict)
    del broken["conv_in.weight"]
    broken["not_a_unet_key.weight"] = torch.zeros(1)
    path = tmp_path / "broken.bin"
    torch.save(broken, path)
    with pytest.raises(CheckpointError) as info:
        load_unet_weights(tiny_unet, path)
    message = str(info.value)
    print(f"[zero123plus] error message:\n{message}")
    assert str(path) in message
    assert "missing 1: conv_in.weight" in message
    assert "unexpected 1: not_a_unet_key.weight" in message


def test_shape_mismatch_is_reported(tiny_unet, whitebg_state_dict, tmp_path):
    broken = dict(whitebg_state_dict)
    broken["conv_in.bias"] = torch.zeros(3)
    path = tmp_path / "shapes.bin"
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch 1 .*conv_in\.bias"):
        load_unet_weights(tiny_unet, path)


def test_prefixed_keys_get_a_hint(tiny_unet, whitebg_state_dict, tmp_path):
    path = tmp_path / "prefixed.bin"
    torch.save({f"unet.{k}": v for k, v in whitebg_state_dict.items()}, path)
    with pytest.raises(CheckpointError, match=r"'unet\.' prefix"):
        load_unet_weights(tiny_unet, path)


EXECUTED = []


def _side_effect() -> list:
    EXECUTED.append(True)
    return EXECUTED


class _Payload:
    def __reduce__(self):
        return (_side_effect, ())


def test_pickle_with_arbitrary_objects_is_refused(tiny_unet, whitebg_state_dict, tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({**whitebg_state_dict, "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to unpickle") as info:
        load_unet_weights(tiny_unet, path)
    assert str(path) in str(info.value)
    assert EXECUTED == []


def test_non_mapping_checkpoint_is_refused(tmp_path):
    path = tmp_path / "list.bin"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="flat mapping"):
        read_state_dict(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        read_state_dict(tmp_path / "nope.bin")


# --- folder layout -----------------------------------------------------------------------------------


@needs_golden
def test_model_index_must_name_our_components(tmp_path):
    index = json.loads((TINY / "pipeline" / "model_index.json").read_text())
    index["vision_encoder"] = [None, None]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="'vision_encoder' is missing"):
        read_model_index(tmp_path)


def test_fp16_variant_detection(tmp_path):
    only_fp16 = tmp_path / "a"
    only_fp16.mkdir()
    (only_fp16 / "diffusion_pytorch_model.fp16.safetensors").touch()
    (only_fp16 / "config.json").touch()
    assert safetensors_variant(only_fp16, prefer_fp16=False) == "fp16"
    both = tmp_path / "b"
    both.mkdir()
    (both / "model.fp16.safetensors").touch()
    (both / "model.safetensors").touch()
    assert safetensors_variant(both, prefer_fp16=False) is None
    assert safetensors_variant(both, prefer_fp16=True) == "fp16"
    plain = tmp_path / "c"
    plain.mkdir()
    (plain / "diffusion_pytorch_model.bin").touch()
    (plain / "diffusion_pytorch_model.fp16.bin").touch()
    assert safetensors_variant(plain, prefer_fp16=True) is None, "pickles play no part in the variant"


def _tiny_configs() -> dict:
    """The tiny golden pipeline's configs in the layout of zero123plus_v1.2_configs.json."""
    names = [
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "vision_encoder/config.json",
        "scheduler/scheduler_config.json",
        "feature_extractor_clip/preprocessor_config.json",
        "feature_extractor_vae/preprocessor_config.json",
    ]
    return {name: json.loads((TINY / "pipeline" / name).read_text()) for name in names}


@needs_golden
def test_random_folder_roundtrip(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _random_folder_roundtrip(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _random_folder_roundtrip(tmp_path):
    folder = write_random_zero123plus_folder(tmp_path / "random", _tiny_configs(), dtype=torch.float32, seed=1)
    assert not (folder / "pipeline.py").exists()
    pipe = load_zero123plus(folder)
    assert pipe.config.scheduler["timestep_spacing"] == "trailing"
    tokens = pipe.networks.tokenizer("", padding="max_length", max_length=77, truncation=True).input_ids
    assert tokens[:3] == [512, 513, 0] and len(tokens) == 77

    from PIL import Image

    image = Image.new("RGBA", (40, 40), (200, 30, 30, 255))
    out = pipe(image, num_inference_steps=2, width=64, height=96, generator=0, output_type="np")
    assert out.shape == (96, 64, 3) and out.dtype.name == "float32"
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_package_import_is_light():
    code = "import sys, instantmesh, instantmesh.zero123plus; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])
