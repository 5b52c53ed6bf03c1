"""Zero123++ v1.2 multi-view diffusion (our own pipeline over diffusers / transformers components).

Names are imported lazily so that `import instantmesh.zero123plus` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Zero123PlusPipeline": "pipeline",
    "to_rgb_on_white": "image_inputs",
    "scale_latents": "pipeline",
    "unscale_latents": "pipeline",
    "unscale_image": "pipeline",
    "ReferenceAttnProcessor": "reference_attention",
    "install_reference_attention": "reference_attention",
    "VIEW_OPTIMIZATIONS": "networks.choice",
    "EagerNetworks": "networks.eager",
    "ViewsNetworks": "networks",
    "ViewsConfig": "pipeline",
    "CheckpointError": "loading",
    "load_zero123plus": "loading",
    "load_eager_networks": "loading",
    "read_views_config": "loading",
    "load_unet_weights": "loading",
    "read_state_dict": "loading",
    "build_zero123plus_unet": "loading",
    "build_zero123plus_models": "loading",
    "write_random_zero123plus_folder": "loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
