"""InstantMesh's sparse-view reconstruction model (LRM with FlexiCubes mesh output).

images + cameras -> camera-modulated ViT features -> triplane transformer -> triplanes
triplanes -> SDF / deformation / FlexiCubes weights on a grid -> mesh, and per-vertex colours or a UV
texture map (instantmesh/texture.py).

The submodules are named `encoder`, `transformer` and `synthesizer`, so `state_dict()` keys are the
official checkpoint's keys without their `lrm_generator.` prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cameras import ZERO123PLUS_FOV_DEG
from ..texture import TexturedMesh, bake_texture, load_xatlas
from .config import InstantMeshConfig, LRMConfig, load_config
from .encoder import CameraConditionedImageEncoder
from .synthesizer import TriplaneSynthesizer
from .transformer import TriplaneTransformer


class InstantMeshLRM(nn.Module):
    def __init__(self, config: LRMConfig) -> None:
        super().__init__()
        self.config = config
        self.grid_res = config.grid_res
        self.grid_scale = config.grid_scale
        self.encoder = CameraConditionedImageEncoder(config.encoder)
        self.transformer = TriplaneTransformer(
            inner_dim=config.transformer_dim,
            image_feat_dim=config.encoder_feat_dim,
            triplane_low_res=config.triplane_low_res,
            triplane_high_res=config.triplane_high_res,
            triplane_dim=config.triplane_dim,
            num_layers=config.transformer_layers,
            num_heads=config.transformer_heads,
        )
        self.synthesizer = TriplaneSynthesizer(
            triplane_dim=config.triplane_dim, samples_per_ray=config.rendering_samples_per_ray
        )
        # FlexiCubes grid; a plain object (not in the state dict), created by init_flexicubes_geometry.
        self.geometry: Any = None

    @classmethod
    def from_config(
        cls,
        config: LRMConfig | InstantMeshConfig | str | Path,
        encoder_config: str | Path | Mapping[str, Any] | None = None,
    ) -> InstantMeshLRM:
        """Build (randomly initialised) from a config object or a yaml path.

        Build inside `with torch.device("meta"):` to get a shape-only model for free.
        """
        if isinstance(config, (str, Path)):
            config = load_config(config, encoder_config=encoder_config)
        elif encoder_config is not None:
            raise ValueError("encoder_config is only used when config is a path")
        if isinstance(config, InstantMeshConfig):
            config = config.model
        return cls(config)

    def forward_planes(self, images: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """images [B,V,3,H,W] in [0,1], cameras [B,V,16] -> triplanes [B,3,triplane_dim,high_res,high_res]."""
        batch, views = images.shape[:2]
        feats = self.encoder(images, cameras)
        feats = feats.reshape(batch, views * feats.shape[1], feats.shape[2])
        return self.transformer(feats)

    def init_flexicubes_geometry(self, device: torch.device | str, fovy: float = ZERO123PLUS_FOV_DEG) -> None:
        """Create the FlexiCubes grid on `device`.

        `fovy` is accepted for upstream's signature; it only configures upstream's view rasteriser, which
        neither mesh extraction path here uses.
        """
        from instantmesh.flexicubes import FlexiCubesGeometry

        self.geometry = FlexiCubesGeometry(self.grid_res, self.grid_scale, torch.device(device))

    def _require_geometry(self) -> Any:
        if self.geometry is None:
            raise RuntimeError("call init_flexicubes_geometry(device) before extracting geometry")
        return self.geometry

    def get_sdf_deformation_prediction(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDF [B,N,1], deformation [B,N,3] and FlexiCubes weights [B,res^3,21] on this model's grid."""
        geometry = self._require_geometry()
        return self.synthesizer.get_sdf_deformation_prediction(planes, geometry.verts, geometry.indices, self.grid_res)

    @torch.no_grad()
    def extract_mesh(
        self, planes: torch.Tensor, use_texture_map: bool = False, texture_resolution: int = 1024
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | TexturedMesh:
        """Mesh of one triplane set.

        Without a texture map: vertices float32 [N,3], faces int64 [F,3], vertex colours uint8 [N,3]
        (`clamp(rgb, 0, 1) * 255` truncated, as upstream quantises them).
        With `use_texture_map=True`: a `TexturedMesh` (the same vertices and faces, xatlas UVs and a
        `texture_resolution`² RGB texture whose texels are the colour field at their surface points); needs
        the `xatlas` package (TextureUnavailable otherwise). Callers pass the config's
        `infer.texture_resolution`.
        """
        if planes.shape[0] != 1:
            raise ValueError(f"extract_mesh takes one triplane set, got a batch of {planes.shape[0]}")
        if use_texture_map:
            load_xatlas()
        geometry = self._require_geometry()
        sdf, deformation, weight = self.get_sdf_deformation_prediction(planes)
        vertices, faces = geometry.extract(sdf[0, :, 0], deformation[0], weight[0])
        if use_texture_map:
            return bake_texture(
                vertices,
                faces,
                lambda points: self.synthesizer.get_texture_prediction(planes, points.unsqueeze(0))[0],
                texture_resolution,
            )
        rgb = self.synthesizer.get_texture_prediction(planes, vertices.unsqueeze(0))[0]
        colors = (rgb.float().clamp(0, 1) * 255).to(torch.uint8)
        return (
            vertices.float().cpu().numpy(),
            faces.long().cpu().numpy(),
            colors.cpu().numpy(),
        )


def load_instantmesh_lrm(
    config: LRMConfig | InstantMeshConfig | str | Path,
    checkpoint: str | Path,
    device: torch.device | str = "cpu",
    encoder_config: str | Path | Mapping[str, Any] | None = None,
    cache: Path | None = None,
) -> InstantMeshLRM:
    """Build the model without random initialisation, strictly load `checkpoint`, move to `device`, eval mode.

    `cache`: a folder for the checked safetensors copy of a pickled checkpoint, read straight onto `device`
    at later loads (see `read_lrm_weights`).
    """
    from .checkpoint import load_lrm_checkpoint

    with torch.device("meta"):
        model = InstantMeshLRM.from_config(config, encoder_config=encoder_config)
    load_lrm_checkpoint(model, checkpoint, assign=True, device=device, cache=cache)
    return model.to(device).eval()
