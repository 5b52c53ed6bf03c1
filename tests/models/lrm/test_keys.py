"""State-dict layout of our LRM against the official checkpoint inventories, and checkpoint loading."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from instantmesh.lrm.checkpoint import (  # noqa: E402
    PREFIX,
    CheckpointError,
    load_lrm_checkpoint,
    read_lrm_state_dict,
    save_lrm_checkpoint,
)
from instantmesh.lrm.config import EncoderConfig, load_config, preset_path  # noqa: E402
from instantmesh.lrm.model import InstantMeshLRM, load_instantmesh_lrm  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]

GOLDEN = Path(os.environ.get("INSTANTMESH_GOLDEN", Path(__file__).resolve().parents[4] / "shared" / "golden"))
TINY = GOLDEN / "tiny_lrm"
if not (GOLDEN / "instant_mesh_large.keys.json").is_file():
    pytest.skip(f"golden data not found at {GOLDEN}", allow_module_level=True)


def _meta_model(config_path: Path, **kwargs: object) -> InstantMeshLRM:
    with torch.device("meta"):
        return InstantMeshLRM.from_config(config_path, **kwargs)


def _inventory(model: InstantMeshLRM) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        PREFIX + key: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in model.state_dict().items()
    }


def _golden_inventory(name: str) -> tuple[dict[str, tuple[tuple[int, ...], str]], int]:
    data = json.loads((GOLDEN / f"{name}.keys.json").read_text())
    keys = {entry["key"]: (tuple(entry["shape"]), entry["dtype"]) for entry in data["keys"]}
    return keys, data["num_parameters"]


@pytest.mark.parametrize(
    ("preset", "golden"),
    [("instant-mesh-large", "instant_mesh_large"), ("instant-mesh-base", "instant_mesh_base")],
)
def test_state_dict_matches_official_inventory(preset: str, golden: str) -> None:
    model = _meta_model(preset_path(preset))
    ours = _inventory(model)
    expected, num_parameters = _golden_inventory(golden)
    assert sorted(set(expected) - set(ours)) == [], "keys missing from our model"
    assert sorted(set(ours) - set(expected)) == [], "keys our model has but the checkpoint does not"
    assert ours == expected
    assert sum(p.numel() for p in model.parameters()) == num_parameters
    assert list(model.buffers()) == []


def test_preset_model_config_matches_golden_json() -> None:
    for preset, golden in (("instant-mesh-large", "instant_mesh_large"), ("instant-mesh-base", "instant_mesh_base")):
        data = json.loads((GOLDEN / f"{golden}.keys.json").read_text())
        params = data["model_config"]["params"]
        config = load_config(preset_path(preset)).model
        for key, value in params.items():
            assert getattr(config, key) == value, (preset, key)
        vit = data["encoder_vit_config_used"]
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "layer_norm_eps",
            "image_size",
            "patch_size",
            "num_channels",
            "qkv_bias",
        ):
            assert getattr(config.encoder, key) == vit[key], (preset, key)


def test_upstream_yaml_without_encoder_section_defaults_to_dino_vitb16(tmp_path: Path) -> None:
    text = preset_path("instant-mesh-large").read_text()
    head, rest = text.split("encoder_config:", 1)
    upstream_like = head + "infer_config:" + rest.split("infer_config:", 1)[1]
    path = tmp_path / "instant-mesh-large.yaml"
    path.write_text(upstream_like)
    config = load_config(path)
    assert config.model.encoder == EncoderConfig()
    assert config.infer.model_path == "ckpts/instant_mesh_large.ckpt"
    expected, _ = _golden_inventory("instant_mesh_large")
    assert _inventory(_meta_model(path)) == expected


def test_tiny_preset_equals_golden_tiny_config() -> None:
    ours = load_config(preset_path("tiny"))
    golden = load_config(TINY / "config.yaml", encoder_config=TINY / "encoder_config.json")
    assert ours.model == golden.model
    # input_size is our addition (the golden inputs are 64 px); every upstream infer field matches.
    assert dataclasses.replace(ours.infer, input_size=golden.infer.input_size) == golden.infer
    assert ours.infer.input_size == 64


def test_tiny_preset_matches_golden_weights_layout() -> None:
    from safetensors import safe_open

    with safe_open(str(TINY / "weights.safetensors"), framework="pt") as handle:
        golden = {key: (tuple(handle.get_slice(key).get_shape()), "float32") for key in handle.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert _inventory(_meta_model(preset_path("tiny"))) == golden


@pytest.fixture(scope="module")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = InstantMeshLRM.from_config(preset_path("tiny"))
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_official_layout_checkpoint_round_trip(tmp_path: Path, tiny_state_dict: dict) -> None:
    path = tmp_path / "instant_mesh_tiny.ckpt"
    save_lrm_checkpoint(tiny_state_dict, path, extra={"lpips.net.slice1.0.weight": torch.zeros(2, 3)})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict"}
    assert all(key.startswith(PREFIX) or key.startswith("lpips.") for key in raw["state_dict"])

    model = InstantMeshLRM.from_config(preset_path("tiny"))
    load_lrm_checkpoint(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, tiny_state_dict[key]), key

    loaded = load_instantmesh_lrm(preset_path("tiny"), path)
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, tiny_state_dict[key]), key


def test_checkpoint_through_the_safetensors_cache(tmp_path: Path, tiny_state_dict: dict) -> None:
    """The worker's path: the first load writes the checked copy (LRM keys only), the second reads it; same weights."""
    path = tmp_path / "instant_mesh_tiny.ckpt"
    save_lrm_checkpoint(tiny_state_dict, path, extra={"lpips.net.slice1.0.weight": torch.zeros(2, 3)})
    cache = tmp_path / "cache"
    first = load_instantmesh_lrm(preset_path("tiny"), path, cache=cache)
    copies = list(cache.glob("*.safetensors"))
    assert len(copies) == 1
    assert set(read_lrm_state_dict(copies[0])) == set(tiny_state_dict)
    second = load_instantmesh_lrm(preset_path("tiny"), path, cache=cache)
    assert list(cache.glob("*.safetensors")) == copies
    for model in (first, second):
        for key, value in model.state_dict().items():
            assert torch.equal(value, tiny_state_dict[key]), key


def test_safetensors_with_and_without_prefix(tmp_path: Path, tiny_state_dict: dict) -> None:
    from safetensors.torch import save_file

    prefixed = tmp_path / "prefixed.safetensors"
    save_lrm_checkpoint(tiny_state_dict, prefixed)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state_dict.items()}, str(bare))
    for path in (prefixed, bare):
        state_dict = read_lrm_state_dict(path)
        assert set(state_dict) == set(tiny_state_dict)


@pytest.mark.parametrize("defect", ["missing", "shape", "unexpected"])
def test_mismatched_checkpoint_fails_clearly(tmp_path: Path, tiny_state_dict: dict, defect: str) -> None:
    state_dict = dict(tiny_state_dict)
    if defect == "missing":
        key = "transformer.layers.1.cross_attn.k_proj_weight"
        del state_dict[key]
    elif defect == "shape":
        key = "synthesizer.decoder.net_weight.0.weight"
        state_dict[key] = torch.zeros(64, 7)
    else:
        key = "transformer.layers.2.norm1.weight"
        state_dict[key] = torch.ones(64)
    path = tmp_path / f"{defect}.ckpt"
    save_lrm_checkpoint(state_dict, path)
    model = InstantMeshLRM.from_config(preset_path("tiny"))
    with pytest.raises(CheckpointError) as info:
        load_lrm_checkpoint(model, path)
    message = str(info.value)
    assert key in message
    assert str(path) in message
    label = {"missing": "1 missing", "shape": "1 shape mismatches", "unexpected": "1 unexpected"}[defect]
    assert label in message


_UNPICKLE_SIDE_EFFECTS: list[str] = []


def _record_side_effect() -> Payload:
    _UNPICKLE_SIDE_EFFECTS.append("executed")
    return Payload()


class Payload:
    """An arbitrary object whose unpickling would run code."""

    def __reduce__(self) -> tuple:
        return (_record_side_effect, ())


def test_arbitrary_pickle_is_refused(tmp_path: Path, tiny_state_dict: dict) -> None:
    path = tmp_path / "evil.ckpt"
    container = {"state_dict": {PREFIX + k: v for k, v in tiny_state_dict.items()}, "hyper_parameters": Payload()}
    torch.save(container, path)
    _UNPICKLE_SIDE_EFFECTS.clear()
    with pytest.raises(CheckpointError, match="refused") as info:
        read_lrm_state_dict(path)
    assert str(path) in str(info.value)
    assert _UNPICKLE_SIDE_EFFECTS == []


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_lrm_state_dict(tmp_path / "nope.ckpt")
