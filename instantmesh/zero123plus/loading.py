"""Loading Zero123++ v1.2 from a local diffusers-layout folder, and the InstantMesh white-background UNet.

Only local files are read. The folder's own `pipeline.py` (the upstream custom pipeline) is
ignored: components are loaded one by one with `from_pretrained` and handed to our pipeline, from safetensors
only (`instantmesh.safetensors_only`: checked before any loader runs; a pickle is never opened).
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

from ..safetensors_only import check_safetensors, safetensors_variant
from ..weights import ZERO123PLUS_LOADED
from ..weights_file import CheckpointError
from .image_inputs import ImageInputs
from .networks.eager import EagerNetworks
from .pipeline import NetworkFacts, ViewsConfig, Zero123PlusPipeline
from .unet_weights import apply_unet_weights, load_unet_weights, read_state_dict

__all__ = [
    "CheckpointError",
    "load_eager_networks",
    "load_unet_weights",
    "load_zero123plus",
    "read_state_dict",
    "read_views_config",
]

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

SCHEDULER_CONFIG = "scheduler_config.json"
INSTANTMESH_TIMESTEP_SPACING = "trailing"


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


def read_scheduler_config(folder: PathLike) -> dict[str, Any]:
    """The scheduler's config with InstantMesh's timestep spacing (it runs Zero123++ with trailing timesteps)."""
    path = Path(folder) / "scheduler" / SCHEDULER_CONFIG
    config = json.loads(path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    return {**config, "timestep_spacing": INSTANTMESH_TIMESTEP_SPACING}


def read_views_config(folder: PathLike) -> ViewsConfig:
    """What the pipeline needs of the folder besides its networks: configs and processors, no weights, no diffusers."""
    folder = Path(folder)
    index = read_model_index(folder)
    facts = NetworkFacts.from_configs(_json(folder / "unet" / "config.json"), _json(folder / "vae" / "config.json"))
    return ViewsConfig(
        facts,
        read_scheduler_config(folder),
        ImageInputs.from_folder(folder / "feature_extractor_clip"),
        ImageInputs.from_folder(folder / "feature_extractor_vae"),
        tuple(float(c) for c in index["ramping_coefficients"]),
    )


def _json(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not a JSON object")
    return loaded


def load_zero123plus(
    folder: PathLike,
    whitebg_unet_path: PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    timings: dict[str, float] | None = None,
) -> Zero123PlusPipeline:
    """The pipeline of a Zero123++ v1.2 folder on its eager networks (`load_eager_networks`)."""
    networks = load_eager_networks(folder, whitebg_unet_path, device, dtype, timings)
    return Zero123PlusPipeline(read_views_config(folder), networks)


def load_eager_networks(
    folder: PathLike,
    whitebg_unet_path: PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    timings: dict[str, float] | None = None,
) -> EagerNetworks:
    """Load the networks of a Zero123++ v1.2 folder (local files only), optionally with the InstantMesh
    white-background UNet.

    Every component is read from safetensors: one whose weights are only pickles is refused (`PickledWeights`, a
    ValueError) before any loader is called. `timings`, when given, gets the seconds spent on each part
    (``read_<name>_s``; see `rpcworker.backends.instantmesh` for the list). The CUDA context and the
    white-background UNet's bytes are brought up in a thread while diffusers and transformers are imported (file
    reads and device copies release the GIL): read_cuda_init_s and unet_weights_s overlap read_imports_s, and
    read_unet_s is what is left after the imports.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    seconds = {} if timings is None else timings
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[f"read_{name}_s"] = now - clock[0]
        clock[0] = now

    folder = Path(folder)
    read_model_index(folder)  # names every component, or says which is missing
    check_safetensors(folder, ZERO123PLUS_LOADED + (("unet",) if whitebg_unet_path is None else ()))
    target = torch.device(device)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zero123plus-read") as pool:
        early = pool.submit(_early_reads, target, whitebg_unet_path, seconds)
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

        lap("imports")  # diffusers and transformers are imported lazily, here: seconds of the cold start

        def model(cls: Any, name: str) -> Any:
            subfolder = folder / name
            variant = safetensors_variant(subfolder, prefer_fp16=dtype == torch.float16)
            loaded = cls.from_pretrained(
                subfolder, torch_dtype=dtype, variant=variant, use_safetensors=True, local_files_only=True
            )
            return loaded.eval()

        if whitebg_unet_path is None:
            early.result()
            unet = model(UNet2DConditionModel, "unet")
        else:
            # The white-background UNet replaces every weight: build it on the meta device (no random init, no
            # read of the folder's UNet) and take the file's tensors on the device as the parameters.
            start = time.perf_counter()
            with torch.device("meta"):
                unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            built = time.perf_counter()
            state_dict = early.result()
            seconds["unet_meta_build_s"] = built - start
            seconds["unet_weights_wait_s"] = time.perf_counter() - built
            apply_unet_weights(unet, state_dict, whitebg_unet_path, assign=True)
            unet = unet.to(dtype).eval()
            _synchronize(target)
    lap("unet")

    vae = model(AutoencoderKL, "vae")
    lap("vae")
    text_encoder = model(CLIPTextModel, "text_encoder")
    lap("text_encoder")
    vision_encoder = model(CLIPVisionModelWithProjection, "vision_encoder")
    lap("vision_encoder")
    networks = EagerNetworks(
        unet,
        vae,
        vision_encoder,
        text_encoder,
        CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
    )
    lap("processors")
    networks.to(device=device)
    _synchronize(torch.device(device))
    lap("to_device")
    return networks


def _early_reads(
    device: torch.device, whitebg_unet_path: PathLike | None, seconds: dict[str, float]
) -> dict[str, torch.Tensor]:
    """The device's first use (the CUDA context: its own phase) and the white-background UNet's state dict on it
    (empty without one)."""
    import time

    start = time.perf_counter()
    if device.type == "cuda":
        torch.empty(1, device=device)
        _synchronize(device)
    seconds["read_cuda_init_s"] = time.perf_counter() - start
    if whitebg_unet_path is None:
        return {}
    start = time.perf_counter()
    state_dict = read_state_dict(whitebg_unet_path, device)
    _synchronize(device)
    seconds["unet_weights_s"] = time.perf_counter() - start
    return state_dict


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        save(folder / name, safe_serialization=True)  # transformers 4.34 and diffusers 0.20 default to pickles
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
