"""Triplane transformer: learned triplane tokens cross-attend to the image features, then upsample.

The attention modules store their weights under `torch.nn.MultiheadAttention`'s parameter names (what the
official checkpoint holds) but run through `F.scaled_dot_product_attention` directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .parameters import normal_parameter


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, length, dim = x.shape
    return x.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


class CrossAttention(nn.Module):
    """Bias-free multi-head cross-attention whose keys/values come from a different width (`cond_dim`)."""

    def __init__(self, dim: int, cond_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj_weight = nn.Parameter(torch.empty(dim, dim))
        self.k_proj_weight = nn.Parameter(torch.empty(dim, cond_dim))
        self.v_proj_weight = nn.Parameter(torch.empty(dim, cond_dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            nn.init.xavier_uniform_(weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        q = _split_heads(F.linear(x, self.q_proj_weight), self.num_heads)
        k = _split_heads(F.linear(cond, self.k_proj_weight), self.num_heads)
        v = _split_heads(F.linear(cond, self.v_proj_weight), self.num_heads)
        return self.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class SelfAttention(nn.Module):
    """Bias-free multi-head self-attention with one packed [3D, D] input projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.num_heads) for t in F.linear(x, self.in_proj_weight).chunk(3, dim=-1))
        return self.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class TriplaneBlock(nn.Module):
    """Pre-norm block: cross-attention to image features, self-attention among triplane tokens, MLP."""

    def __init__(self, dim: int, cond_dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        # Upstream leaves these three at LayerNorm's default eps (1e-5); only the final norm uses 1e-6.
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, cond_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0)
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(self.norm1(x), cond)
        x = x + self.self_attn(self.norm2(x))
        return x + self.mlp(self.norm3(x))


class TriplaneTransformer(nn.Module):
    """Maps image features [B, L, cond_dim] to triplanes [B, 3, triplane_dim, 2*low_res, 2*low_res]."""

    def __init__(
        self,
        inner_dim: int,
        image_feat_dim: int,
        triplane_low_res: int,
        triplane_high_res: int,
        triplane_dim: int,
        num_layers: int,
        num_heads: int,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.triplane_low_res = triplane_low_res
        self.triplane_high_res = triplane_high_res
        self.triplane_dim = triplane_dim
        self.pos_embed = normal_parameter(1, 3 * triplane_low_res**2, inner_dim, std=inner_dim**-0.5)
        self.layers = nn.ModuleList([TriplaneBlock(inner_dim, image_feat_dim, num_heads) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(inner_dim, eps=eps)
        self.deconv = nn.ConvTranspose2d(inner_dim, triplane_dim, kernel_size=2, stride=2)

    def forward(self, image_feats: torch.Tensor) -> torch.Tensor:
        batch = image_feats.shape[0]
        res = self.triplane_low_res
        x = self.pos_embed.expand(batch, -1, -1)
        for layer in self.layers:
            x = layer(x, image_feats)
        x = self.norm(x)
        # tokens are ordered (plane, row, col); each plane becomes a [D, res, res] image for the deconv
        x = x.view(batch, 3, res, res, -1).permute(0, 1, 4, 2, 3).reshape(batch * 3, -1, res, res)
        x = self.deconv(x)
        return x.view(batch, 3, *x.shape[1:])
