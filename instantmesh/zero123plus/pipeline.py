"""Zero123++ v1.2: one condition image in, a 3 x 2 grid of six fixed views out.

A plain class over its networks (`networks.ViewsNetworks`), handed in at construction and swapped in one call
(`Zero123PlusPipeline.use`): the pipeline never learns whether they are the diffusers / transformers modules or
compiled forms of them. With the same weights, seed and call, the eager networks reproduce the upstream pipeline
that InstantMesh drives, random draw for random draw (see /work/shared/golden/README.md for the facts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from .conditioning import Conditioning
from .euler_ancestral import EulerAncestralSchedule
from .image_inputs import ImageInputs, to_rgb_on_white
from .networks import ViewsNetworks
from .sampling import STEPS_AHEAD, CancelCheck, ObjectRun, ProgressCallback, denoise, noise_condition_latents

OutputType = Literal["pil", "np", "pt", "latent"]

# v1.2 works in a rescaled latent space and a rescaled image space (both fixed by training).
LATENT_SHIFT = 0.22
LATENT_SCALE = 0.75
IMAGE_SCALE = 0.8 / 0.5


def scale_latents(latents: torch.Tensor) -> torch.Tensor:
    return (latents - LATENT_SHIFT) * LATENT_SCALE


def unscale_latents(latents: torch.Tensor) -> torch.Tensor:
    return latents / LATENT_SCALE + LATENT_SHIFT


def unscale_image(image: torch.Tensor) -> torch.Tensor:
    return image * IMAGE_SCALE


def eight_bit(image: torch.Tensor) -> np.ndarray:
    """H x W x 3 uint8 pixels of a 3 x H x W image in [0, 1]. On a GPU they are made there (a quarter of the float32
    bytes to copy back, and no CPU pass over them); on the CPU numpy makes them, faster there than torch. Both are
    the same IEEE float32 product and half-to-even rounding, so the same bytes."""
    if image.device.type == "cpu":
        return (image.permute(1, 2, 0).float().numpy() * 255).round().astype(np.uint8)
    return quantised(image).cpu().numpy()


def quantised(image: torch.Tensor) -> torch.Tensor:
    """`eight_bit`'s pixels as a tensor on the image's device."""
    return (image.float() * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


@dataclass(frozen=True)
class NetworkFacts:
    """What the pipeline needs to know of its networks, from their configs: enough to run without the modules."""

    latent_channels: int
    vae_scale_factor: int
    """Pixels per latent along each side."""
    vae_scaling_factor: float

    @classmethod
    def from_configs(cls, unet_config: Mapping[str, Any], vae_config: Mapping[str, Any]) -> NetworkFacts:
        return cls(
            int(unet_config["in_channels"]),
            2 ** (len(vae_config["block_out_channels"]) - 1),
            float(vae_config["scaling_factor"]),
        )


@dataclass(frozen=True)
class ViewsConfig:
    """What the pipeline needs besides its networks, from the Zero123++ folder's files (`loading.read_views_config`)."""

    facts: NetworkFacts
    scheduler: Mapping[str, Any]
    """The scheduler's config (`EulerAncestralSchedule.from_config`)."""
    clip_inputs: ImageInputs
    vae_inputs: ImageInputs
    ramping_coefficients: tuple[float, ...]
    """Per text token, the weight of the image embedding added to it (`global_conditioning`)."""


class Zero123PlusPipeline(Conditioning):
    """Zero123++ v1.2 multi-view generation with reference attention and image-embedding conditioning.

    The networks may run in float16; latents, noise, guidance and scheduler arithmetic stay in
    float32 and are cast only at the network inputs, so a seed means the same noise in any dtype.
    """

    def __init__(self, config: ViewsConfig, networks: ViewsNetworks) -> None:
        self.config = config
        self.clip_inputs, self.vae_inputs = config.clip_inputs, config.vae_inputs
        self.ramping_coefficients = config.ramping_coefficients
        self.facts = config.facts
        self.vae_scale_factor = config.facts.vae_scale_factor
        self._networks = networks
        self._blank_posteriors: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def networks(self) -> ViewsNetworks:
        return self._networks

    def use(self, networks: ViewsNetworks) -> ViewsNetworks:
        """Run every later call on `networks` (eager modules, or a compiled form of the same weights); returns the
        networks used until now. The one switch point: call it between calls, never during one (the worker swaps
        between requests, on the thread that runs them). Also after changing the networks in place (dtype, memory
        format): what was computed with them before (the blank image's posterior) is forgotten."""
        previous, self._networks = self._networks, networks
        self._blank_posteriors.clear()
        return previous

    @property
    def device(self) -> torch.device:
        return self._networks.device

    @property
    def dtype(self) -> torch.dtype:
        return self._networks.dtype

    def noise_condition_latents(
        self, cond_latents: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Noise the condition latents to the current step's level and scale them like a model input."""
        return noise_condition_latents(cond_latents, sigma, noise)

    # --- decoding -----------------------------------------------------------------------------

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scheduler-space latents to an image in [-1, 1] (values outside are clipped later)."""
        latents = (unscale_latents(latents) / self.facts.vae_scaling_factor).to(self.dtype)
        return unscale_image(self._networks.decode(latents).float())

    @staticmethod
    def postprocess(image: torch.Tensor, output_type: OutputType) -> Image.Image | np.ndarray | torch.Tensor:
        image = (image.detach() / 2 + 0.5).clamp(0, 1)[0]
        if output_type == "pt":
            return image
        if output_type == "np":
            return image.permute(1, 2, 0).float().cpu().numpy()
        return Image.fromarray(eight_bit(image))

    # --- the whole thing ----------------------------------------------------------------------

    @torch.inference_mode()
    def __call__(
        self,
        image: Image.Image,
        prompt: str = "",
        negative_prompt: str = "",
        num_inference_steps: int = 28,
        guidance_scale: float = 4.0,
        width: int = 640,
        height: int = 960,
        generator: torch.Generator | int | None = None,
        output_type: OutputType = "pil",
        progress: ProgressCallback | None = None,
        check_cancelled: CancelCheck | None = None,
    ) -> Image.Image | np.ndarray | torch.Tensor:
        """Generate the 3 x 2 view grid for `image` (RGBA is composited on white).

        `generator` may be a seed; None draws from the global RNG, as upstream does after
        `seed_everything`. `progress(step, total)` is called after every denoising step;
        `check_cancelled()` is called before every step and before decoding, and whatever it
        raises aborts the run. Returns a PIL image, an HxWx3 float array in [0, 1] ("np"), a
        3xHxW tensor ("pt") or the final latents in the pipeline's scaled space ("latent").
        """
        (result,) = self.generate_batch(
            [image],
            [generator],
            prompt,
            negative_prompt,
            num_inference_steps,
            guidance_scale,
            width,
            height,
            output_type,
            [progress],
            [check_cancelled],
        )
        if isinstance(result, BaseException):
            raise result
        return result

    @torch.inference_mode()
    def generate_batch(
        self,
        images: Sequence[Image.Image],
        generators: Sequence[torch.Generator | int | None],
        prompt: str = "",
        negative_prompt: str = "",
        num_inference_steps: int = 28,
        guidance_scale: float = 4.0,
        width: int = 640,
        height: int = 960,
        output_type: OutputType = "pil",
        progress: Sequence[ProgressCallback | None] | None = None,
        check_cancelled: Sequence[CancelCheck | None] | None = None,
        steps_ahead: int = STEPS_AHEAD,
    ) -> list[Image.Image | np.ndarray | torch.Tensor | BaseException]:
        """`__call__` for several objects whose denoising steps share the UNet (one batch per step).

        One result per object, in order: what `__call__` would give it alone, or the exception that made it
        leave the batch (its conditioning failed, or its `check_cancelled` raised); the others go on.
        `steps_ahead`: steps queued on a GPU before the oldest one's progress is reported (0: every step
        finishes before the next is queued, for timing them).
        """
        if height % 8 or width % 8:
            raise ValueError(f"height and width must be multiples of 8, got {height}x{width}")
        count = len(images)
        progress = progress or [None] * count
        check_cancelled = check_cancelled or [None] * count
        schedule = self.schedule(num_inference_steps)
        runs = [
            self._condition(image, generator, prompt, negative_prompt, guidance_scale, on_step, cancel)
            for image, generator, on_step, cancel in zip(images, generators, progress, check_cancelled, strict=True)
        ]
        factor = self.vae_scale_factor
        latent_shape = (1, self.facts.latent_channels, height // factor, width // factor)
        denoise(runs, schedule, self._networks.step, guidance_scale, latent_shape, self.device, steps_ahead)
        results: list[Image.Image | np.ndarray | torch.Tensor | BaseException] = []
        for run in runs:
            if output_type != "latent":
                run.cancel_check()
            if run.error is not None:
                results.append(run.error)
            elif output_type == "latent":
                results.append(run.latents)
            else:  # one object at a time: the VAE's peak memory stays that of batch 1
                results.append(self.postprocess(self.decode_latents(run.latents), output_type))
        return results

    def schedule(self, num_inference_steps: int) -> EulerAncestralSchedule:
        return EulerAncestralSchedule.from_config(self.config.scheduler, num_inference_steps, self.device)

    def _condition(
        self,
        image: Image.Image,
        generator: torch.Generator | int | None,
        prompt: str,
        negative_prompt: str,
        guidance_scale: float,
        progress: ProgressCallback | None,
        check_cancelled: CancelCheck | None,
    ) -> ObjectRun:
        """One object's conditioning (condition latents, hidden states); its draws come first from its generator."""
        if isinstance(generator, int):
            generator = torch.Generator("cpu").manual_seed(generator)
        run = ObjectRun(torch.empty(0), torch.empty(0), generator, progress, check_cancelled)
        if not run.cancel_check():
            return run
        try:  # the CPU makes the VAE's input while the GPU embeds the image; each network's output is used before
            # the next network runs (compiled ones are CUDA graphs of one pool, whose outputs may share memory)
            rgb = to_rgb_on_white(image)
            encoder_hidden_states = self.global_conditioning(
                self.encode_prompt(prompt), self.encode_image(self.clip_input(rgb))
            )
            vae_pixels = self.vae_input(rgb)
            cond_latents = self.encode_condition_image(vae_pixels, generator)
            if guidance_scale > 1.0:
                negative_latents = self.negative_condition_latents(vae_pixels, generator)
                cond_latents = torch.cat([negative_latents, cond_latents])
                encoder_hidden_states = torch.cat([self.encode_prompt(negative_prompt), encoder_hidden_states])
        except Exception as exc:
            run.error = exc
            return run
        run.cond_latents, run.context = cond_latents, encoder_hidden_states
        return run
