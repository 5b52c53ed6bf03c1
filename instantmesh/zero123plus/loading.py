"""Loading Zero123++ v1.2 from a local diffusers-layout folder, and the InstantMesh white-background UNet.

Only local files are read. The folder's own `pipeline.py` (the upstream custom pipeline) is
ignored: components are loaded one by one with `from_pretrained` and handed to our pipeline.
Also here: building the full-size models from the published configs (for key and
parameter-count checks) and writing random-weight pipeline folders (for benchmarks).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..weights_file import CheckpointError, load_weights_file
from .pipeline import Zero123PlusPipeline

PathLike = str | os.PathLike

# model_index.json entry -> the class names accepted for it (aliases the hub uses for the same thing).
COMPONENT_CLASSES: dict[str, tuple[str, ...]] = {
    "vae": ("AutoencoderKL",),
    "text_encoder": ("CLIPTextModel",),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
    "unet": ("UNet2DConditionModel",),
    "scheduler": ("EulerAncestralDiscreteScheduler",),
    "vision_encoder": ("CLIPVisionModelWithProjection",),
    "feature_extractor_clip": ("CLIPImageProcessor", "CLIPFeatureExtractor"),
    "feature_extractor_vae": ("CLIPImageProcessor", "CLIPFeatureExtractor"),
}

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def _image_processor_class() -> Any:
    """The PIL implementation of CLIPImageProcessor.

    transformers >= 5 makes `CLIPImageProcessor` a torchvision backend when torchvision is
    installed; its resampling differs slightly from the PIL one that Zero123++ was trained and
    published with, so we ask for the PIL class where it exists.
    """
    import transformers

    if hasattr(transformers, "CLIPImageProcessorPil"):
        return transformers.CLIPImageProcessorPil
    return transformers.CLIPImageProcessor


def _weights_variant(subfolder: Path, dtype: torch.dtype) -> str | None:
    """'fp16' when the folder only has fp16-variant weights, or has both and fp16 is asked for."""
    names = [p.name for p in subfolder.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES)]
    fp16 = [n for n in names if ".fp16." in n or ".fp16-" in n]
    plain = [n for n in names if n not in fp16]
    if fp16 and (not plain or dtype == torch.float16):
        return "fp16"
    return None


def read_model_index(folder: PathLike) -> dict[str, Any]:
    """model_index.json, checked to name the components our pipeline needs."""
    index_path = Path(folder) / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} not found: not a Zero123++ pipeline folder")
    index = json.loads(index_path.read_text())
    for name, accepted in COMPONENT_CLASSES.items():
        entry = index.get(name)
        if not entry or entry[1] is None:
            raise ValueError(f"{index_path}: component {name!r} is missing")
        if entry[1] not in accepted:
            raise ValueError(f"{index_path}: component {name!r} is {entry[1]}, expected one of {accepted}")
    coefficients = index.get("ramping_coefficients")
    if not coefficients:
        raise ValueError(f"{index_path}: ramping_coefficients missing (v1.2 needs them)")
    return index


def load_zero123plus(
    folder: PathLike,
    whitebg_unet_path: PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    timings: dict[str, float] | None = None,
) -> Zero123PlusPipeline:
    """Load a Zero123++ v1.2 folder (local files only), optionally with the InstantMesh white-background UNet.

    The scheduler gets `timestep_spacing='trailing'`, as InstantMesh runs it. `timings`, when given, gets
    the seconds spent on each component (``read_<name>_s``) and on the move to the device.
    """
    import time

    seconds = {} if timings is None else timings
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[f"read_{name}_s"] = now - clock[0]
        clock[0] = now

    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    folder = Path(folder)
    index = read_model_index(folder)
    lap("imports")  # diffusers and transformers are imported lazily, here: seconds of the cold start

    def model(cls: Any, name: str) -> Any:
        subfolder = folder / name
        variant = _weights_variant(subfolder, dtype)
        loaded = cls.from_pretrained(subfolder, torch_dtype=dtype, variant=variant, local_files_only=True)
        return loaded.eval()

    if whitebg_unet_path is None:
        unet = model(UNet2DConditionModel, "unet")
    else:
        # The white-background UNet replaces every weight: build it on the meta device (no random init, no
        # read of the folder's UNet) and take the file's tensors on the device as the parameters.
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        load_unet_weights(unet, whitebg_unet_path, device=device, assign=True)
        unet = unet.to(dtype).eval()
    lap("unet")
    scheduler_config = EulerAncestralDiscreteScheduler.load_config(folder / "scheduler", local_files_only=True)
    processor_cls = _image_processor_class()

    vae = model(AutoencoderKL, "vae")
    lap("vae")
    text_encoder = model(CLIPTextModel, "text_encoder")
    lap("text_encoder")
    vision_encoder = model(CLIPVisionModelWithProjection, "vision_encoder")
    lap("vision_encoder")
    pipeline = Zero123PlusPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler.from_config(scheduler_config, timestep_spacing="trailing"),
        vision_encoder=vision_encoder,
        feature_extractor_clip=processor_cls.from_pretrained(folder / "feature_extractor_clip", local_files_only=True),
        feature_extractor_vae=processor_cls.from_pretrained(folder / "feature_extractor_vae", local_files_only=True),
        ramping_coefficients=index["ramping_coefficients"],
    )
    lap("processors")
    pipeline.to(device=device)
    lap("to_device")
    return pipeline


# --- the white-background UNet ------------------------------------------------------------------


def read_state_dict(path: PathLike, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A flat tensor state dict from `.safetensors`, or from a torch pickle loaded with `weights_only=True`.

    Pickles that hold anything but tensors and plain containers are refused, never executed. A pickle is
    converted once to a checked safetensors copy in the cache folder, which later reads map straight to
    `device`.
    """
    from safetensors.torch import load_file

    from ..safetensors_cache import convert, valid_copy
    from ..tiny import cache_root

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UNet weights not found: {path}")
    cache = cache_root() / "safetensors"
    source = path if path.suffix == ".safetensors" else valid_copy(path, cache)
    if source is not None:
        return load_file(str(source), device=str(device))
    state_dict = load_weights_file(path)
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise CheckpointError(f"{path}: expected a flat mapping of parameter names to tensors")
    try:
        convert(path, state_dict, cache)
    except (OSError, RuntimeError) as exc:  # a read-only cache or shared tensors: load without the copy
        import logging

        logging.getLogger(__name__).warning("no safetensors copy of %s: %s", path, exc)
    return {k: v.to(device) for k, v in state_dict.items()}


def _preview(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_unet_weights(unet: torch.nn.Module, path: PathLike, device: torch.device | str = "cpu", assign: bool = False) -> None:
    """Load a raw UNet state dict strictly (same keys and shapes, no prefix), as InstantMesh does.

    With `assign` the file's tensors (read onto `device`) become the parameters: for a UNet built on meta.
    """
    state_dict = read_state_dict(path, device)
    expected = unet.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected.keys() & state_dict.keys()
        if state_dict[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"{path}: does not match the UNet ({len(expected)} keys expected, file has {len(state_dict)})"]
        if missing:
            lines.append(f"  missing {len(missing)}: {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected {len(unexpected)}: {_preview(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatch {len(mismatched)} (file vs model): {_preview(mismatched)}")
        prefixes = {k.split(".", 1)[0] for k in unexpected}
        if len(prefixes) == 1 and missing and all(k.split(".", 1)[-1] in expected for k in unexpected):
            lines.append(f"  the file's keys carry a {prefixes.pop() + '.'!r} prefix; a raw UNet state dict has none")
        raise CheckpointError("\n".join(lines))
    unet.load_state_dict(state_dict, strict=True, assign=assign)
    left = [name for name, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{path}: {len(left)} UNet tensors were not in the file: {_preview(left)}")


# --- full-size models from the published configs -------------------------------------------------


def load_configs(configs: Mapping[str, Any] | PathLike) -> Mapping[str, Any]:
    """The configs file in the layout of zero123plus_v1.2_configs.json ('unet/config.json' -> dict, ...)."""
    if isinstance(configs, Mapping):
        return configs
    return json.loads(Path(configs).read_text())


def build_zero123plus_unet(config_dict: Mapping[str, Any], device: torch.device | str = "meta") -> torch.nn.Module:
    """A UNet2DConditionModel from a unet config; on the meta device it allocates nothing."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel.from_config(dict(config_dict))


def build_zero123plus_models(
    configs: Mapping[str, Any] | PathLike, device: torch.device | str = "meta"
) -> dict[str, torch.nn.Module]:
    """The four networks of the pipeline (unet, vae, text_encoder, vision_encoder), randomly initialised."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    configs = load_configs(configs)
    models = {"unet": build_zero123plus_unet(configs["unet/config.json"], device)}
    with torch.device(device):
        models["vae"] = AutoencoderKL.from_config(dict(configs["vae/config.json"]))
        models["text_encoder"] = CLIPTextModel(CLIPTextConfig.from_dict(dict(configs["text_encoder/config.json"])))
        models["vision_encoder"] = CLIPVisionModelWithProjection(
            CLIPVisionConfig.from_dict(dict(configs["vision_encoder/config.json"]))
        )
    return models


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for bytes, in CLIP vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    remapped = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(remapped))]


def write_placeholder_clip_tokenizer(folder: PathLike, vocab_size: int = 49408, max_length: int = 77) -> None:
    """A CLIP tokenizer with the official special-token ids but no merges (the real BPE files are not here).

    Enough for the empty prompt Zero123++ uses: "" tokenises to [bos, eos, pad...] as with the real one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += [f"<|unused{i}|>" for i in range(vocab_size - 2 - len(tokens))]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def write_random_zero123plus_folder(
    folder: PathLike,
    configs: Mapping[str, Any] | PathLike,
    dtype: torch.dtype = torch.float16,
    seed: int = 0,
    tokenizer_folder: PathLike | None = None,
) -> Path:
    """Write a random-weight pipeline folder in the official v1.2 layout (for benchmarks; minutes at full size).

    The tokenizer is copied from `tokenizer_folder` when given, else a placeholder is written.
    """
    folder = Path(folder)
    configs = load_configs(configs)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for name, module in build_zero123plus_models(configs, device="cpu").items():
        module.to(dtype)
        save: Any = module.save_pretrained  # a diffusers/transformers method, not a submodule
        if name in ("unet", "vae"):
            save(folder / name, safe_serialization=True)
        else:
            save(folder / name)
    for name in (
        "scheduler/scheduler_config.json",
        "feature_extractor_clip/preprocessor_config.json",
        "feature_extractor_vae/preprocessor_config.json",
        "model_index.json",
    ):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(configs[name], indent=2))
    if tokenizer_folder is not None:
        shutil.copytree(tokenizer_folder, folder / "tokenizer", dirs_exist_ok=True)
    else:
        text_config = configs["text_encoder/config.json"]
        write_placeholder_clip_tokenizer(
            folder / "tokenizer", text_config["vocab_size"], text_config.get("max_position_embeddings", 77)
        )
    return folder
