"""Checking fetched weight files with our loaders, far enough to know each is the right file and whole, in seconds.

No tensor is read: the models are built on the meta device from their configs, and the files give their keys and
shapes alone (a pickle's tensors mapped, a safetensors header), so a check of the full-size files costs the
diffusers/transformers imports and a few megabytes of pickles, not the gigabytes of weights.

- Zero123++ folder: ``model_index.json`` names the components and v1.2's ramping coefficients, the scheduler and
  image processors' configs read, the tokenizer loads, the VAE, the text encoder and the vision encoder have
  safetensors weights (pickled ones are refused, never opened: ``instantmesh.safetensors_only``), and those
  hold as many numbers as the models their ``config.json`` describe (names vary with the library that wrote
  them; counts do not). Safetensors files must be as long as their headers say.
- White-background UNet: the keys and shapes of the UNet that the folder's ``unet/config.json`` describes, strictly.
- LRM checkpoint: the keys and shapes of the LRM its config describes (``instant-mesh-large`` by default), strictly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .safetensors_only import check_safetensors
from .weights import ZERO123PLUS_LOADED, zero123plus_files
from .weights_file import CheckpointError, load_weights_file, safetensors_inventory


def check_zero123plus(folder: Path) -> str:
    """What was checked of the Zero123++ folder; CheckpointError/ValueError/OSError when something is wrong."""
    from transformers import CLIPTokenizer

    from .zero123plus.image_inputs import ImageInputs
    from .zero123plus.loading import (
        COMPONENT_CLASSES,
        build_zero123plus_models,
        read_model_index,
        read_scheduler_config,
    )

    index = read_model_index(folder)
    check_safetensors(folder, ZERO123PLUS_LOADED)
    read_scheduler_config(folder)
    for name in ("feature_extractor_clip", "feature_extractor_vae"):
        ImageInputs.from_folder(folder / name)
    CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    names = [str(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file()]
    files = zero123plus_files(names)
    configs = {f"{name}/config.json": _json(folder / name / "config.json") for name in ("unet", *ZERO123PLUS_LOADED)}
    models = build_zero123plus_models(configs, device="meta")
    counts = []
    for name in ZERO123PLUS_LOADED:
        weights = [folder / f for f in files if f.startswith(f"{name}/") and not f.endswith(".json")]
        expected = sum(p.numel() for p in models[name].parameters())
        found = sum(_float_numbers(path) for path in weights)
        if found != expected:
            raise CheckpointError(
                f"{folder / name}: its weights hold {found:,} numbers, but the model its config.json describes has "
                f"{expected:,} parameters"
            )
        counts.append(f"{name} {expected:,}")
    return (
        f"model_index.json names its {len(COMPONENT_CLASSES)} components and "
        f"{len(index['ramping_coefficients'])} ramping coefficients; tokenizer, scheduler and image processors "
        f"load; weights hold the parameters of their configs ({', '.join(counts)})"
    )


def check_whitebg_unet(path: Path, zero123plus: Path) -> str:
    """What was checked of the white-background UNet, against the UNet of the folder's ``unet/config.json``."""
    from .zero123plus.loading import build_zero123plus_unet
    from .zero123plus.unet_weights import check_unet_state_dict

    unet = build_zero123plus_unet(_json(zero123plus / "unet" / "config.json"), device="meta")
    state_dict = _flat_tensors(load_weights_file(path, mmap=True), path)
    check_unet_state_dict(unet, state_dict, path)
    return f"{len(state_dict)} tensors: the keys and shapes of the UNet in the Zero123++ folder's unet/config.json"


def check_lrm(path: Path, config: Path) -> str:
    """What was checked of the LRM checkpoint, against the model `config` (a yaml) describes."""
    from .lrm.checkpoint import PREFIX, check_state_dict, read_lrm_state_dict
    from .lrm.model import InstantMeshLRM

    with torch.device("meta"):
        model = InstantMeshLRM.from_config(config)
    state_dict = read_lrm_state_dict(path, mmap=True)
    check_state_dict(model, state_dict, str(path))
    return f"{len(state_dict)} tensors under {PREFIX!r}: the keys and shapes of the LRM in {config.name}"


def _json(path: Path) -> dict[str, Any]:
    value = json.loads(path.read_text())
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value


def _float_numbers(path: Path) -> int:
    """How many floating-point numbers a weights file holds (integer buffers such as position ids left out)."""
    if path.suffix == ".safetensors":
        inventory = safetensors_inventory(path)
        return sum(_numel(shape) for dtype, shape in inventory.values() if dtype.startswith(("F", "BF")))
    tensors = _flat_tensors(load_weights_file(path, mmap=True), path)
    return sum(t.numel() for t in tensors.values() if t.is_floating_point())


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _flat_tensors(content: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(content, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()
    ):
        raise CheckpointError(f"{path}: expected a flat mapping of parameter names to tensors")
    return dict(content)
