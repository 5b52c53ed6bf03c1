"""The conditioning of Zero123++: the condition image and the prompts into what the UNet is given.

The condition image becomes the reference pass's latents (a sample of the VAE posterior) and, through the CLIP
vision encoder, an image embedding added to the prompt's hidden states. With guidance, the negative half is a
blank image's latents and the negative prompt's hidden states: both the same for every object, so they are
computed once (only the latents' sample is drawn per object, from its generator).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from .host_to_device import upload
from .image_inputs import ImageInputs, to_rgb_on_white
from .networks import ViewsNetworks
from .sampling import randn


class Conditioning:
    """The pipeline's conditioning methods (a mixin of `Zero123PlusPipeline`, which sets these attributes)."""

    clip_inputs: ImageInputs
    vae_inputs: ImageInputs
    ramping_coefficients: Sequence[float]
    _blank_posteriors: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]]

    @property
    def networks(self) -> ViewsNetworks:
        raise NotImplementedError

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """The condition image as VAE input and as CLIP vision input (both [1, 3, h, w], on the networks' device)."""
        image = to_rgb_on_white(image)
        return self.vae_input(image), self.clip_input(image)

    def vae_input(self, image: Image.Image) -> torch.Tensor:
        """An RGB condition image as the VAE's input, on its way to the device (no wait for the GPU)."""
        return upload(self.vae_inputs(image).to(self.networks.dtype), self.networks.device)

    def clip_input(self, image: Image.Image) -> torch.Tensor:
        """An RGB condition image as the CLIP vision encoder's input, on its way to the device."""
        return upload(self.clip_inputs(image).to(self.networks.dtype), self.networks.device)

    def condition_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior's mean and std for `pixels` (views of the encoder's output: use them at once)."""
        mean, std = self.networks.encode(pixels).chunk(2, dim=1)
        return mean, std

    @staticmethod
    def sample_posterior(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A float32 sample of the posterior (one draw of `generator`)."""
        noise = randn(mean.shape, generator, mean.device)
        return mean.float() + std.float() * noise

    def encode_condition_image(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A float32 sample of the VAE posterior, unscaled: the reference pass sees raw VAE latents."""
        return self.sample_posterior(*self.condition_posterior(pixels), generator)

    def negative_condition_latents(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`encode_condition_image` of a blank (all-zero) image like `like`: the guidance's negative condition.

        Its posterior is the same for every object, so the encoder runs once per shape (until the pipeline is handed
        networks again, `use`); only the sample is drawn per object, from its generator, as before.
        """
        key = (tuple(like.shape), like.dtype, like.device)
        if key not in self._blank_posteriors:
            mean, std = self.condition_posterior(torch.zeros_like(like))
            self._blank_posteriors[key] = (mean.clone(), std.clone())
        return self.sample_posterior(*self._blank_posteriors[key], generator)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        return self.networks.prompt_embeds(prompt)

    def encode_image(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        return self.networks.image_embeds(clip_pixels)

    def global_conditioning(self, prompt_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Add the image embedding to every text token, weighted per token position by the ramp."""
        ramp = upload(torch.tensor(self.ramping_coefficients, dtype=prompt_embeds.dtype), prompt_embeds.device)
        return prompt_embeds + image_embeds[:, None, :] * ramp[None, :, None]
