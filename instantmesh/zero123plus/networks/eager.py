"""The views' networks as the diffusers / transformers modules, called as they are: any device, dtype and shape.

The compiled forms (`compiled`, `packaged`) are made from these modules, through the one-tensor wrappers below
(`VaeDecode`, `VaeEncode`, `ImageEmbeds`, and `reference_attention.ReferenceStep` and its two passes), so that a
compiler sees one function of tensors per network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..reference_attention import ReferenceStep, install_reference_attention
from ..sampling import Upcoming


class VaeDecode(torch.nn.Module):
    """The VAE's latents -> image as a module, so that the compilers see one function of one tensor."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, return_dict=False)[0]  # type: ignore[operator]


class VaeEncode(torch.nn.Module):
    """The VAE's pixels -> posterior as a module of one tensor out: its mean and standard deviation, concatenated
    along the channels (the pipeline draws the sample)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(pixels).latent_dist  # type: ignore[operator]
        return torch.cat([posterior.mean, posterior.std], dim=1)


class ImageEmbeds(torch.nn.Module):
    """The CLIP vision encoder's pixels -> projected image embedding as a module of one tensor."""

    def __init__(self, vision_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixels).image_embeds


class EagerNetworks:
    """`ViewsNetworks` of the modules themselves. The UNet gets the reference-attention processors here.

    The text encoder only ever encodes the empty prompt in this project: `free_text_encoder` keeps that embedding
    and drops the encoder (and its memory)."""

    def __init__(
        self,
        unet: Any,
        vae: Any,
        vision_encoder: Any,
        text_encoder: Any = None,
        tokenizer: Any = None,
        prompts: dict[str, torch.Tensor] | None = None,
    ) -> None:
        install_reference_attention(unet)
        self.unet, self.vae, self.vision_encoder = unet, vae, vision_encoder
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.prompts: dict[str, torch.Tensor] = dict(prompts or {})
        """Prompt -> hidden states, kept (the text encoder may be gone)."""
        self._encode, self._image = VaeEncode(vae), ImageEmbeds(vision_encoder)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def modules(self) -> Iterator[Any]:
        yield from (m for m in (self.unet, self.vae, self.vision_encoder, self.text_encoder) if m is not None)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EagerNetworks:
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in self.modules():
            module.to(**moves)
        self.prompts = {k: v.to(device=device, dtype=dtype) for k, v in self.prompts.items()}
        return self

    def to_channels_last(self) -> None:
        """NHWC convolutions in the UNet and the VAE (the ``channels_last`` option; within 2 of 255 of NCHW)."""
        self.unet.to(memory_format=torch.channels_last)
        self.vae.to(memory_format=torch.channels_last)

    def free_text_encoder(self, keep_prompts: Sequence[str] = ("",)) -> None:
        """Encode `keep_prompts` once and drop the text encoder (Zero123++ only ever uses the empty prompt)."""
        with torch.inference_mode():
            for prompt in keep_prompts:
                self.prompts[prompt] = self.prompt_embeds(prompt).clone()
        self.text_encoder = None

    def step(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_sample: torch.Tensor,
        upcoming: Upcoming | None = None,
    ) -> torch.Tensor:
        return ReferenceStep(self.unet, self.unet.dtype)(sample, timestep, encoder_hidden_states, reference_sample)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, return_dict=False)[0]

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._encode(pixels)

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._image(pixels)

    def prompt_embeds(self, prompt: str) -> torch.Tensor:
        if prompt in self.prompts:
            return self.prompts[prompt]
        if self.text_encoder is None:
            raise ValueError(
                f"the text encoder was freed at load; only the prompts {sorted(self.prompts)} are available"
            )
        tokens = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.device)).last_hidden_state
