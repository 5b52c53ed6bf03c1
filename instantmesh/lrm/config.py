"""Typed configuration of the InstantMesh LRM and its loader from upstream-schema yaml files.

The yaml schema is upstream's (`model_config.target/params` + `infer_config`). Our shipped files add an
`encoder_config` section with the ViT sizes, because upstream takes them from the hub config of
`facebook/dino-vitb16`; a yaml without that section gets the dino-vitb16 values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("instant-mesh-large", "instant-mesh-base", "tiny")

# Hugging Face ViTConfig keys that do not change inference (dropout is off in eval, init is overwritten).
_INERT_VIT_KEYS = frozenset(
    {"hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "model_type", "architectures"}
)
# Image-processor keys that upstream overrides at call time (`do_resize=False, do_rescale=False`).
_INERT_PROCESSOR_KEYS = frozenset(
    {"do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_processor_type"}
)


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of the camera-modulated ViT image encoder; defaults are facebook/dino-vitb16."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"encoder hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_act != "gelu":
            raise ValueError(f"encoder hidden_act {self.hidden_act!r} is not supported (only 'gelu')")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError("encoder image_mean/image_std must have one value per channel")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderConfig:
        """Accept our flat section, or the `{"vit_config": ..., "image_processor": ...}` json layout."""
        if "vit_config" in data:
            flat = dict(data["vit_config"])
            processor = dict(data.get("image_processor", {}))
            for key in ("image_mean", "image_std"):
                if key in processor:
                    flat[key] = processor.pop(key)
            unknown = set(processor) - _INERT_PROCESSOR_KEYS
            if unknown:
                raise ValueError(f"unknown image_processor keys in encoder config: {sorted(unknown)}")
        else:
            flat = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(flat) - names - _INERT_VIT_KEYS
        if unknown:
            raise ValueError(f"unknown encoder config keys: {sorted(unknown)}")
        kwargs = {k: v for k, v in flat.items() if k in names}
        for key in ("image_mean", "image_std"):
            if key in kwargs:
                kwargs[key] = tuple(float(x) for x in kwargs[key])
        if "layer_norm_eps" in kwargs:
            kwargs["layer_norm_eps"] = float(kwargs["layer_norm_eps"])
        return cls(**kwargs)


@dataclass(frozen=True)
class LRMConfig:
    """`model_config.params` of upstream's yaml, plus the encoder sizes."""

    encoder_feat_dim: int = 768
    encoder_freeze: bool = False
    encoder_model_name: str = "facebook/dino-vitb16"
    transformer_dim: int = 1024
    transformer_layers: int = 16
    transformer_heads: int = 16
    triplane_low_res: int = 32
    triplane_high_res: int = 64
    triplane_dim: int = 80
    rendering_samples_per_ray: int = 128
    grid_res: int = 128
    grid_scale: float = 2.0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        if self.encoder_feat_dim != self.encoder.hidden_size:
            raise ValueError(
                f"encoder_feat_dim ({self.encoder_feat_dim}) must equal the encoder hidden_size "
                f"({self.encoder.hidden_size})"
            )
        if self.transformer_dim % self.transformer_heads != 0:
            raise ValueError(
                f"transformer_dim {self.transformer_dim} is not divisible by transformer_heads {self.transformer_heads}"
            )
        if self.triplane_high_res != 2 * self.triplane_low_res:
            raise ValueError("triplane_high_res must be 2 * triplane_low_res (one stride-2 deconvolution)")


@dataclass(frozen=True)
class InferConfig:
    """`infer_config` of upstream's yaml (paths are as written, relative to where the caller decides)."""

    unet_path: str | None = None
    model_path: str | None = None
    texture_resolution: int = 1024
    render_resolution: int = 512
    input_size: int = 320
    """Side of the views the LRM reads (our addition: upstream resizes the generated views to 320)."""


@dataclass(frozen=True)
class InstantMeshConfig:
    """A whole config file: the LRM, the inference settings and upstream's `target` string."""

    model: LRMConfig
    infer: InferConfig
    target: str = "src.models.lrm_mesh.InstantMesh"


def preset_path(name: str) -> Path:
    """Path of a shipped config (`instant-mesh-large`, `instant-mesh-base` or `tiny`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    return CONFIG_DIR / f"{name}.yaml"


def _read_encoder_override(encoder_config: str | Path | Mapping[str, Any]) -> EncoderConfig:
    if isinstance(encoder_config, Mapping):
        return EncoderConfig.from_dict(encoder_config)
    path = Path(encoder_config)
    if path.suffix == ".json":
        return EncoderConfig.from_dict(json.loads(path.read_text()))
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if isinstance(data, dict) and "encoder_config" in data:
        data = data["encoder_config"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: the encoder config is not a mapping")
    return EncoderConfig.from_dict({str(k): v for k, v in data.items()})


def load_config(path: str | Path, encoder_config: str | Path | Mapping[str, Any] | None = None) -> InstantMeshConfig:
    """Load a yaml in upstream's schema.

    `encoder_config` (a json/yaml path or a mapping) overrides the file's `encoder_config` section; without
    either, the encoder is dino-vitb16.
    """
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(Path(path)), resolve=True)
    if not isinstance(data, dict) or "model_config" not in data:
        raise ValueError(f"{path}: not an InstantMesh config (no model_config section)")
    model_section = data["model_config"]
    params = dict(model_section.get("params") or {})
    known = {f.name for f in dataclasses.fields(LRMConfig)} - {"encoder"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"{path}: unknown model_config.params keys: {sorted(unknown)}")
    if "grid_scale" in params:
        params["grid_scale"] = float(params["grid_scale"])

    if encoder_config is not None:
        encoder = _read_encoder_override(encoder_config)
    elif data.get("encoder_config") is not None:
        encoder = EncoderConfig.from_dict(data["encoder_config"])
    else:
        encoder = EncoderConfig()

    infer_section = dict(data.get("infer_config") or {})
    infer_known = {f.name for f in dataclasses.fields(InferConfig)}
    infer = InferConfig(**{k: v for k, v in infer_section.items() if k in infer_known})
    target = model_section.get("target", InstantMeshConfig.target)
    return InstantMeshConfig(model=LRMConfig(encoder=encoder, **params), infer=infer, target=target)
