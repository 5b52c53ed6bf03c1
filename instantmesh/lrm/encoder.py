"""Image encoder: a DINO ViT whose every layer is modulated by the view's camera (adaLN, DiT style).

Parameter names follow the Hugging Face ViT layout (`model.embeddings...`, `model.encoder.layer.N...`,
`model.layernorm`) so that the official InstantMesh checkpoint loads without renaming; the modules
themselves are plain torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig
from .parameters import normal_parameter

EMBEDDING_INIT_STD = 0.02
"""The CLS token's and position table's random init (ViT's); loaded weights replace it."""


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-sample affine modulation of token features: x [B,L,D], shift/scale [B,D]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbeddings(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    """CLS token + patch tokens + position table, resampled when the patch grid differs from pre-training."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.grid_size = config.image_size // config.patch_size
        self.cls_token = normal_parameter(1, 1, config.hidden_size, std=EMBEDDING_INIT_STD)
        self.position_embeddings = normal_parameter(
            1, self.grid_size**2 + 1, config.hidden_size, std=EMBEDDING_INIT_STD
        )
        self.patch_embeddings = PatchEmbeddings(config)

    def interpolate_position_embeddings(self, num_patches: int, height: int, width: int) -> torch.Tensor:
        """Bicubic resampling of the patch position table to the input's patch grid.

        Follows DINO/transformers-4.34 semantics: the resize is given as a scale factor of
        `(grid + 0.1) / table_grid` (not as an output size), which shifts the sampling positions slightly;
        the official weights were trained with exactly this.
        """
        table = self.position_embeddings
        if num_patches == table.shape[1] - 1 and height == width:
            return table
        dim = table.shape[-1]
        side = self.grid_size
        rows = height // self.patch_size + 0.1
        cols = width // self.patch_size + 0.1
        patch_table = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_table = F.interpolate(
            patch_table, scale_factor=(rows / side, cols / side), mode="bicubic", align_corners=False
        )
        if patch_table.shape[-2:] != (int(rows), int(cols)):
            raise RuntimeError(
                f"position table resampled to {tuple(patch_table.shape[-2:])}, expected {(int(rows), int(cols))}"
            )
        patch_table = patch_table.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([table[:, :1], patch_table], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        patches = self.patch_embeddings(pixel_values)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        return tokens + self.interpolate_position_embeddings(patches.shape[1], height, width)


class SelfAttentionProjections(nn.Module):
    """Query/key/value projections; scaled dot-product attention over all tokens."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.query(hidden_states))
        k = self._split_heads(self.key(hidden_states))
        v = self._split_heads(self.value(hidden_states))
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).flatten(2)


class AttentionOutput(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden_states)


class Attention(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.attention = SelfAttentionProjections(config)
        self.output = AttentionOutput(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(hidden_states))


class Intermediate(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden_states))


class Output(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden_states)


class ModulatedViTLayer(nn.Module):
    """Pre-norm ViT block whose two LayerNorm outputs are shifted and scaled by the camera embedding."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(config.hidden_size, 4 * config.hidden_size))
        modulation = self.adaLN_modulation[1]
        assert isinstance(modulation, nn.Linear)
        nn.init.zeros_(modulation.weight)
        nn.init.zeros_(modulation.bias)

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        shift_attn, scale_attn, shift_mlp, scale_mlp = self.adaLN_modulation(condition).chunk(4, dim=-1)
        attn_in = modulate(self.layernorm_before(hidden_states), shift_attn, scale_attn)
        hidden_states = hidden_states + self.attention(attn_in)
        mlp_in = modulate(self.layernorm_after(hidden_states), shift_mlp, scale_mlp)
        return hidden_states + self.output(self.intermediate(mlp_in))


class ViTLayerStack(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([ModulatedViTLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, condition)
        return hidden_states


class ModulatedViT(nn.Module):
    """The ViT backbone without pooler; returns the final-LayerNorm hidden states [B, 1+patches, D]."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = ViTLayerStack(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embeddings(pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype))
        return self.layernorm(self.encoder(hidden_states, condition))


class CameraConditionedImageEncoder(nn.Module):
    """Encodes each view with the ViT, conditioned on its 16-number camera through an MLP embedding."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = ModulatedViT(config)
        self.camera_embedder = nn.Sequential(
            nn.Linear(16, config.hidden_size), nn.SiLU(), nn.Linear(config.hidden_size, config.hidden_size)
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet mean/std normalisation of [0,1] images (no resize, no rescale), computed in float32."""
        mean = torch.tensor(self.config.image_mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.config.image_std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        return ((images.float() - mean) / std).to(images.dtype)

    def forward(self, images: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """images [B,V,3,H,W] in [0,1], cameras [B,V,16] -> features [B*V, 1+patches, D]."""
        pixel_values = self.normalize(images.flatten(0, 1))
        first = self.camera_embedder[0]
        assert isinstance(first, nn.Linear)
        condition = self.camera_embedder(cameras.to(first.weight.dtype)).flatten(0, 1)
        return self.model(pixel_values, condition)
