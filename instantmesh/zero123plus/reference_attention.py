"""Reference attention: the UNet's self-attention also looks at the condition image.

Zero123++ runs the UNet twice per denoising step. The first ("write") pass runs on the
noised condition latents and records, for every self-attention layer, the tokens that
layer attends over. The second ("read") pass runs on the latents being denoised; each
self-attention layer appends the recorded tokens to its own before the key and value
projections, so the generated views can copy appearance from the condition image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

WRITE = "write"
READ = "read"


class ReferenceBank:
    """State shared by all reference processors of one UNet: the pass mode and the recorded tokens."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.tokens: dict[str, torch.Tensor] = {}

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Within this block, every wrapped self-attention records its input tokens."""
        self.tokens.clear()
        self.mode = WRITE
        try:
            yield
        finally:
            self.mode = None

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Within this block, every wrapped self-attention also attends over the recorded tokens."""
        self.mode = READ
        try:
            yield
        finally:
            self.mode = None
            self.tokens.clear()


class ReferenceAttnProcessor:
    """Parameter-free wrapper around a self-attention processor that reads and writes a `ReferenceBank`.

    Outside a recording or reading block it is plain self-attention, so the UNet stays usable on its own.
    """

    def __init__(self, name: str, bank: ReferenceBank, inner: Any) -> None:
        self.name = name
        self.bank = bank
        self.inner = inner

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if self.bank.mode == WRITE:
            self.bank.tokens[self.name] = context
        elif self.bank.mode == READ:
            reference = self.bank.tokens.pop(self.name)
            encoder_hidden_states = torch.cat([context, reference], dim=1)
        return self.inner(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **kwargs,
        )


def install_reference_attention(unet: torch.nn.Module) -> ReferenceBank:
    """Wrap the processor of every `attn1` (self-attention) of `unet` and return their shared bank.

    Installing twice re-wraps the original processors rather than stacking wrappers.
    """
    bank = ReferenceBank()
    processors = dict(unet.attn_processors)
    for name, processor in processors.items():
        if isinstance(processor, ReferenceAttnProcessor):
            processor = processor.inner
        if name.endswith("attn1.processor"):
            processor = ReferenceAttnProcessor(name, bank, processor)
        processors[name] = processor
    unet.set_attn_processor(processors)
    return bank


class FusedReferenceAttnProcessor:
    """Self-attention with one fused QKV projection that also reads and writes a `ReferenceBank`.

    The recorded tokens only need keys and values, so they go through the K/V rows of the fused weight
    alone, and their keys are appended after the projection: the same attention as projecting the
    concatenation, with one matmul fewer per layer and no query projection of the reference tokens.
    """

    def __init__(self, name: str, bank: ReferenceBank) -> None:
        self.name = name
        self.bank = bank

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(f"{self.name}: fused reference attention is for plain self-attention only")
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        if self.bank.mode == WRITE:
            self.bank.tokens[self.name] = hidden_states
        elif self.bank.mode == READ:
            reference = self.bank.tokens.pop(self.name)
            inner = query.shape[-1]
            bias = None if attn.to_qkv.bias is None else attn.to_qkv.bias[inner:]
            ref_key, ref_value = torch.nn.functional.linear(reference, attn.to_qkv.weight[inner:], bias).chunk(2, dim=-1)
            key = torch.cat([key, ref_key], dim=1)
            value = torch.cat([value, ref_value], dim=1)
        heads = attn.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (heads, -1)).transpose(1, 2)

        out = torch.nn.functional.scaled_dot_product_attention(split(query), split(key), split(value))
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2)))
        return out / attn.rescale_output_factor


def fuse_reference_attention(unet: torch.nn.Module) -> ReferenceBank:
    """Fuse the Q/K/V projections of every attention of `unet` and return the new shared bank.

    Self-attention (`attn1`) gets `FusedReferenceAttnProcessor`; cross-attention gets diffusers' fused
    processor (K/V fused, the query apart). The separate projections stay, so the weights load as before.
    """
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    bank = ReferenceBank()
    processors: dict[str, Any] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        unsupported = [
            what for what, present in (
                ("spatial_norm", module.spatial_norm is not None), ("group_norm", module.group_norm is not None),
                ("norm_q", module.norm_q is not None), ("residual_connection", module.residual_connection),
            ) if present
        ]
        if unsupported:
            raise ValueError(f"{name}: cannot fuse an attention with {', '.join(unsupported)}")
        module.fuse_projections(fuse=True)
        key = f"{name}.processor"
        processors[key] = FusedReferenceAttnProcessor(key, bank) if name.endswith("attn1") else FusedAttnProcessor2_0()
    unet.set_attn_processor(processors)
    return bank
