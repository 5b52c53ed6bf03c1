"""Zero123++ v1.2: one condition image in, a 3 x 2 grid of six fixed views out.

A plain class over diffusers / transformers components (not a diffusers custom pipeline).
With the same weights, seed and call it reproduces the upstream pipeline that InstantMesh
drives, random draw for random draw (see /work/shared/golden/README.md for the facts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from .conditioning import Conditioning
from .euler_ancestral import EulerAncestralSchedule
from .image_inputs import ImageInputs, to_rgb_on_white
from .reference_attention import ReferenceStep, install_reference_attention
from .sampling import (
    STEPS_AHEAD,
    CancelCheck,
    ObjectRun,
    ProgressCallback,
    StepFunction,
    Upcoming,
    denoise,
    noise_condition_latents,
    pad_rows,
)

# The components' classes, as documentation: diffusers and transformers (0.20 .. 0.42, 4.34 .. 5.x) expose
# their modules' methods through decorators and lazy modules that mypy cannot follow, so they are Any here.
AutoencoderKL = Any
EulerAncestralDiscreteScheduler = Any
UNet2DConditionModel = Any
CLIPTextModel = Any
CLIPTokenizer = Any
CLIPVisionModelWithProjection = Any

OutputType = Literal["pil", "np", "pt", "latent"]

# v1.2 works in a rescaled latent space and a rescaled image space (both fixed by training).
LATENT_SHIFT = 0.22
LATENT_SCALE = 0.75
IMAGE_SCALE = 0.8 / 0.5


def _four(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A step's four inputs as a tuple of four (for the step's signature)."""
    sample, timestep, context, reference = tensors
    return sample, timestep, context, reference


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


class Zero123PlusPipeline(Conditioning):
    """Zero123++ v1.2 multi-view generation with reference attention and image-embedding conditioning.

    The networks may run in float16; latents, noise, guidance and scheduler arithmetic stay in
    float32 and are cast only at the network inputs, so a seed means the same noise in any dtype.
    `from_packages` makes one whose networks are compiled packages alone (no diffusers or transformers module).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: EulerAncestralDiscreteScheduler,
        vision_encoder: CLIPVisionModelWithProjection,
        clip_inputs: ImageInputs,
        vae_inputs: ImageInputs,
        ramping_coefficients: Sequence[float],
    ) -> None:
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.unet = unet
        self.scheduler = scheduler
        self.vision_encoder = vision_encoder
        self.clip_inputs = clip_inputs
        self.vae_inputs = vae_inputs
        self.ramping_coefficients = [float(c) for c in ramping_coefficients]
        self.facts = NetworkFacts.from_configs(unet.config, vae.config)
        self.vae_scale_factor = self.facts.vae_scale_factor
        self.scheduler_config: Mapping[str, Any] | None = None
        """The schedule's config, when there is no scheduler object (`from_packages`)."""
        self._device, self._dtype = torch.device("cpu"), torch.float32
        """Where the networks run and their dtype, when there are no modules to ask (`from_packages`)."""
        install_reference_attention(unet)
        self.fast_step: StepFunction | None = None
        """A faster equal of `ReferenceStep` (e.g. compiled) set by the speed options, for the batch sizes it was built for."""
        self.fast_step_plan: Callable[..., list[tuple[int, int]] | None] = lambda *tensors: None
        """How the fast step runs these inputs: chunks of (rows, rows padded to), or None: run them eagerly."""
        self.fast_decode: Callable[[torch.Tensor], torch.Tensor] | None = None
        """A faster equal of the VAE's decode (latents -> image, the VAE's dtype), set by the speed options."""
        self.fast_encode: Callable[[torch.Tensor], torch.Tensor] | None = None
        """A faster equal of the VAE's encode (pixels -> the posterior's mean and std along the channels, `VaeEncode`)."""
        self.fast_image: Callable[[torch.Tensor], torch.Tensor] | None = None
        """A faster equal of the vision encoder's image embedding (`ImageEmbeds`)."""
        self._prompt_embeds: dict[str, torch.Tensor] = {}
        self._blank_posteriors: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_packages(
        cls,
        facts: NetworkFacts,
        scheduler_config: Mapping[str, Any],
        clip_inputs: ImageInputs,
        vae_inputs: ImageInputs,
        ramping_coefficients: Sequence[float],
        prompt_embeds: Mapping[str, torch.Tensor],
        device: torch.device,
        dtype: torch.dtype,
    ) -> Zero123PlusPipeline:
        """A pipeline without modules: its caller sets every ``fast_*`` (compiled packages) and ``fast_step_plan``;
        only the prompts of `prompt_embeds` can be asked for."""
        pipeline = cls.__new__(cls)
        pipeline.vae = pipeline.text_encoder = pipeline.tokenizer = pipeline.unet = pipeline.vision_encoder = None
        pipeline.scheduler, pipeline.scheduler_config = None, dict(scheduler_config)
        pipeline.clip_inputs, pipeline.vae_inputs = clip_inputs, vae_inputs
        pipeline.ramping_coefficients = [float(c) for c in ramping_coefficients]
        pipeline.facts, pipeline.vae_scale_factor = facts, facts.vae_scale_factor
        pipeline._device, pipeline._dtype = device, dtype
        pipeline.fast_step = pipeline.fast_decode = pipeline.fast_encode = pipeline.fast_image = None
        pipeline.fast_step_plan = lambda *tensors: None
        pipeline._prompt_embeds = dict(prompt_embeds)
        pipeline._blank_posteriors = {}
        return pipeline

    @property
    def device(self) -> torch.device:
        return self._device if self.unet is None else next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype if self.unet is None else next(self.unet.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Zero123PlusPipeline:
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in (self.vae, self.text_encoder, self.unet, self.vision_encoder):
            if module is not None:
                module.to(**moves)
        self._prompt_embeds = {k: v.to(device=device, dtype=dtype) for k, v in self._prompt_embeds.items()}
        self.networks_changed()
        return self

    # --- denoising ----------------------------------------------------------------------------

    def noise_condition_latents(
        self, cond_latents: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Noise the condition latents to the current step's level and scale them like a model input."""
        return noise_condition_latents(cond_latents, sigma, noise)

    def unet_with_reference(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_sample: torch.Tensor,
        upcoming: Upcoming | None = None,
    ) -> torch.Tensor:
        """Run the reference (write) pass on `reference_sample`, then the main (read) pass on `sample`.

        Inputs are cast to the UNet's dtype; the output is float32. The fast step is used where it accepts
        these shapes (a batch between its compiled sizes padded with copies of its last row, or split), else
        the eager `ReferenceStep`. `upcoming` (the next step's timestep and reference sample) reaches a fast step
        that runs these rows as they are, which may start the next reference pass now.
        """
        inputs = (sample, timestep, encoder_hidden_states, reference_sample)
        chunks = self.fast_step_plan(*inputs) if self.fast_step is not None else None
        if self.fast_step is None or chunks is None:
            if self.unet is None:
                raise ValueError(
                    f"no compiled step runs inputs of shapes {[list(t.shape) for t in inputs]}, and there is no UNet"
                )
            return ReferenceStep(self.unet, self.unet.dtype)(*inputs)
        fast = self.fast_step
        if chunks == [(sample.shape[0], sample.shape[0])] and upcoming is not None:
            return fast(sample, timestep, encoder_hidden_states, reference_sample, upcoming)
        if len(chunks) == 1:
            return fast(*_four(pad_rows(inputs, chunks[0][1])))[: chunks[0][0]]
        outputs, start = [], 0
        for rows, padded in chunks:  # each output is cloned: the next call of the same graph overwrites it
            part = [t if t.dim() == 0 else t[start : start + rows] for t in inputs]
            outputs.append(fast(*_four(pad_rows(part, padded)))[:rows].clone())
            start += rows
        return torch.cat(outputs)

    # --- decoding -----------------------------------------------------------------------------

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scheduler-space latents to an image in [-1, 1] (values outside are clipped later)."""
        latents = (unscale_latents(latents) / self.facts.vae_scaling_factor).to(
            self.dtype if self.vae is None else self.vae.dtype
        )
        if self.fast_decode is not None:
            return unscale_image(self.fast_decode(latents).float())
        return unscale_image(self.vae.decode(latents, return_dict=False)[0].float())

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
        denoise(runs, schedule, self.unet_with_reference, guidance_scale, latent_shape, self.device, steps_ahead)
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
        """The run's schedule: from the scheduler (which may have been swapped, e.g. by a benchmark), or its config."""
        if self.scheduler is not None:
            return EulerAncestralSchedule(self.scheduler, num_inference_steps, self.device)
        assert self.scheduler_config is not None
        return EulerAncestralSchedule.from_config(self.scheduler_config, num_inference_steps, self.device)

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
