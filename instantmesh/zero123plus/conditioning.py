"""The conditioning of Zero123++: the condition image and the prompts into what the UNet is given.

The condition image becomes the reference pass's latents (a sample of the VAE posterior) and, through the CLIP
vision encoder, an image embedding added to the prompt's hidden states. With guidance, the negative half is a
blank image's latents and the negative prompt's hidden states: both the same for every object, so they are
computed once (only the latents' sample is drawn per object, from its generator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from .host_to_device import upload
from .image_inputs import ImageInputs, to_rgb_on_white
from .sampling import randn


class Conditioning:
    """The pipeline's conditioning methods (a mixin of `Zero123PlusPipeline`, which sets these attributes)."""

    vae: Any
    text_encoder: Any
    tokenizer: Any
    vision_encoder: Any
    clip_inputs: ImageInputs
    vae_inputs: ImageInputs
    ramping_coefficients: list[float]
    fast_encode: Callable[[torch.Tensor], torch.Tensor] | None
    fast_image: Callable[[torch.Tensor], torch.Tensor] | None
    _prompt_embeds: dict[str, torch.Tensor]
    _blank_posteriors: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]]

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        raise NotImplementedError

    def networks_changed(self) -> None:
        """Forget what was computed by the networks as they were (the blank image's posterior): call it after
        changing a network in place (dtype, memory format, a fast_* replacement)."""
        self._blank_posteriors.clear()

    def free_text_encoder(self, keep_prompts: Sequence[str] = ("",)) -> None:
        """Encode `keep_prompts` once and drop the text encoder (Zero123++ only ever uses the empty prompt)."""
        with torch.inference_mode():
            for prompt in keep_prompts:
                self._prompt_embeds[prompt] = self.encode_prompt(prompt).clone()
        self.text_encoder = None

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """The condition image as VAE input and as CLIP vision input (both [1, 3, h, w], on the networks' device)."""
        image = to_rgb_on_white(image)
        return self.vae_input(image), self.clip_input(image)

    def vae_input(self, image: Image.Image) -> torch.Tensor:
        """An RGB condition image as the VAE's input, on its way to the device (no wait for the GPU)."""
        return upload(self.vae_inputs(image).to(self.dtype if self.vae is None else self.vae.dtype), self.device)

    def clip_input(self, image: Image.Image) -> torch.Tensor:
        """An RGB condition image as the CLIP vision encoder's input, on its way to the device."""
        return upload(
            self.clip_inputs(image).to(self.dtype if self.vision_encoder is None else self.vision_encoder.dtype),
            self.device,
        )

    def condition_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior's mean and std for `pixels` (views of the encoder's output: use them at once)."""
        if self.fast_encode is not None:
            mean, std = self.fast_encode(pixels).chunk(2, dim=1)
            return mean, std
        posterior = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        return posterior.mean, posterior.std

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

        Its posterior is the same for every object, so the encoder runs once per shape (until `networks_changed`);
        only the sample is drawn per object, from its generator, as before.
        """
        key = (tuple(like.shape), like.dtype, like.device, self.fast_encode or self.vae)
        if key not in self._blank_posteriors:
            mean, std = self.condition_posterior(torch.zeros_like(like))
            self._blank_posteriors[key] = (mean.clone(), std.clone())
        return self.sample_posterior(*self._blank_posteriors[key], generator)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        if prompt in self._prompt_embeds:
            return self._prompt_embeds[prompt]
        if self.text_encoder is None:
            raise ValueError(
                f"the text encoder was freed at load; only the prompts {sorted(self._prompt_embeds)} are available"
            )
        tokens = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.device)).last_hidden_state

    def encode_image(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        if self.fast_image is not None:
            return self.fast_image(clip_pixels)
        return self.vision_encoder(clip_pixels).image_embeds

    def global_conditioning(self, prompt_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Add the image embedding to every text token, weighted per token position by the ramp."""
        ramp = upload(torch.tensor(self.ramping_coefficients, dtype=prompt_embeds.dtype), prompt_embeds.device)
        return prompt_embeds + image_embeds[:, None, :] * ramp[None, :, None]
