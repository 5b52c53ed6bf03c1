"""Zero123++ v1.2: one condition image in, a 3 x 2 grid of six fixed views out.

A plain class over diffusers / transformers components (not a diffusers custom pipeline).
With the same weights, seed and call it reproduces the upstream pipeline that InstantMesh
drives, random draw for random draw (see /work/shared/golden/README.md for the facts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from .reference_attention import ReferenceStep, install_reference_attention

# The components' classes, as documentation: diffusers and transformers (0.20 .. 0.42, 4.34 .. 5.x) expose
# their modules' methods through decorators and lazy modules that mypy cannot follow, so they are Any here.
AutoencoderKL = Any
EulerAncestralDiscreteScheduler = Any
UNet2DConditionModel = Any
CLIPImageProcessor = Any
CLIPTextModel = Any
CLIPTokenizer = Any
CLIPVisionModelWithProjection = Any

ProgressCallback = Callable[[int, int], None]
StepFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(sample, timestep, encoder_hidden_states, reference_sample) -> float32 noise prediction: `ReferenceStep`."""
CancelCheck = Callable[[], None]
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


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white; the model was trained on white backgrounds."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Float32 normal noise from `generator`, or from the global RNG of `device` when there is none.

    Always float32, because torch does not promise the same half-precision draws as float32
    ones for a seed. A generator on another device (typically a CPU generator for a CUDA run)
    draws on its own device, so a seed gives the same noise on any hardware.
    """
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=torch.float32)
    noise = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device)


class Zero123PlusPipeline:
    """Zero123++ v1.2 multi-view generation with reference attention and image-embedding conditioning.

    The networks may run in float16; latents, noise, guidance and scheduler arithmetic stay in
    float32 and are cast only at the network inputs, so a seed means the same noise in any dtype.
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: EulerAncestralDiscreteScheduler,
        vision_encoder: CLIPVisionModelWithProjection,
        feature_extractor_clip: CLIPImageProcessor,
        feature_extractor_vae: CLIPImageProcessor,
        ramping_coefficients: Sequence[float],
    ) -> None:
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.unet = unet
        self.scheduler = scheduler
        self.vision_encoder = vision_encoder
        self.feature_extractor_clip = feature_extractor_clip
        self.feature_extractor_vae = feature_extractor_vae
        self.ramping_coefficients = [float(c) for c in ramping_coefficients]
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        install_reference_attention(unet)
        self.fast_step: StepFunction | None = None
        """A faster equal of `ReferenceStep` (e.g. compiled) set by the speed options; used where it accepts the shapes."""
        self.fast_step_accepts: Callable[..., bool] = lambda *tensors: True
        self._prompt_embeds: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Zero123PlusPipeline:
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in (self.vae, self.text_encoder, self.unet, self.vision_encoder):
            if module is not None:
                module.to(**moves)
        self._prompt_embeds = {k: v.to(device=device, dtype=dtype) for k, v in self._prompt_embeds.items()}
        return self

    def free_text_encoder(self, keep_prompts: Sequence[str] = ("",)) -> None:
        """Encode `keep_prompts` once and drop the text encoder (Zero123++ only ever uses the empty prompt)."""
        with torch.inference_mode():
            for prompt in keep_prompts:
                self._prompt_embeds[prompt] = self.encode_prompt(prompt).clone()
        self.text_encoder = None

    # --- conditioning -------------------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """The condition image as VAE input and as CLIP vision input (both [1, 3, h, w])."""
        image = to_rgb_on_white(image)
        vae_pixels = self.feature_extractor_vae(images=image, return_tensors="pt").pixel_values
        clip_pixels = self.feature_extractor_clip(images=image, return_tensors="pt").pixel_values
        return (
            vae_pixels.to(device=self.device, dtype=self.vae.dtype),
            clip_pixels.to(device=self.device, dtype=self.vision_encoder.dtype),
        )

    def encode_condition_image(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A float32 sample of the VAE posterior, unscaled: the reference pass sees raw VAE latents."""
        posterior = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        noise = _randn(posterior.mean.shape, generator, posterior.mean.device)
        return posterior.mean.float() + posterior.std.float() * noise

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        if prompt in self._prompt_embeds:
            return self._prompt_embeds[prompt]
        if self.text_encoder is None:
            raise ValueError(f"the text encoder was freed at load; only the prompts {sorted(self._prompt_embeds)} are available")
        tokens = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.device)).last_hidden_state

    def encode_image(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(clip_pixels).image_embeds

    def global_conditioning(self, prompt_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Add the image embedding to every text token, weighted per token position by the ramp."""
        ramp = prompt_embeds.new_tensor(self.ramping_coefficients)
        return prompt_embeds + image_embeds[:, None, :] * ramp[None, :, None]

    # --- denoising ----------------------------------------------------------------------------

    def noise_condition_latents(
        self, cond_latents: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Noise the condition latents to the current step's level and scale them like a model input."""
        return (cond_latents + noise * sigma) / (sigma**2 + 1) ** 0.5

    def unet_with_reference(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_sample: torch.Tensor,
    ) -> torch.Tensor:
        """Run the reference (write) pass on `reference_sample`, then the main (read) pass on `sample`.

        Inputs are cast to the UNet's dtype; the output is float32. The fast step is used where it accepts
        these shapes, else the eager `ReferenceStep`.
        """
        inputs = (sample, timestep, encoder_hidden_states, reference_sample)
        if self.fast_step is not None and self.fast_step_accepts(*inputs):
            return self.fast_step(*inputs)
        return ReferenceStep(self.unet, self.unet.dtype)(*inputs)

    # --- decoding -----------------------------------------------------------------------------

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scheduler-space latents to an image in [-1, 1] (values outside are clipped later)."""
        latents = unscale_latents(latents) / self.vae.config.scaling_factor
        return unscale_image(self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0].float())

    @staticmethod
    def postprocess(image: torch.Tensor, output_type: OutputType) -> Image.Image | np.ndarray | torch.Tensor:
        image = (image.detach() / 2 + 0.5).clamp(0, 1)[0]
        if output_type == "pt":
            return image
        array = image.permute(1, 2, 0).float().cpu().numpy()
        if output_type == "np":
            return array
        return Image.fromarray((array * 255).round().astype(np.uint8))

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
        if height % 8 or width % 8:
            raise ValueError(f"height and width must be multiples of 8, got {height}x{width}")
        if isinstance(generator, int):
            generator = torch.Generator("cpu").manual_seed(generator)
        device = self.device
        do_cfg = guidance_scale > 1.0

        vae_pixels, clip_pixels = self.preprocess(image)

        cond_latents = self.encode_condition_image(vae_pixels, generator)
        if do_cfg:
            negative_latents = self.encode_condition_image(torch.zeros_like(vae_pixels), generator)
            cond_latents = torch.cat([negative_latents, cond_latents])

        image_embeds = self.encode_image(clip_pixels)
        encoder_hidden_states = self.global_conditioning(self.encode_prompt(prompt), image_embeds)
        if do_cfg:
            encoder_hidden_states = torch.cat([self.encode_prompt(negative_prompt), encoder_hidden_states])

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        factor = self.vae_scale_factor
        latent_shape = (1, self.unet.config.in_channels, height // factor, width // factor)
        latents = _randn(latent_shape, generator, device) * self.scheduler.init_noise_sigma

        timesteps = self.scheduler.timesteps
        for i, t in enumerate(timesteps):
            if check_cancelled is not None:
                check_cancelled()
            sigma = self.scheduler.sigmas[i].to(device=device, dtype=torch.float32)
            cond_noise = _randn(cond_latents.shape, generator, device)
            reference_sample = self.noise_condition_latents(cond_latents, sigma, cond_noise)

            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            model_output = self.unet_with_reference(model_input, t, encoder_hidden_states, reference_sample)

            if do_cfg:
                uncond, cond = model_output.chunk(2)
                model_output = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(model_output, t, latents, generator=generator, return_dict=False)[0]
            if progress is not None:
                progress(i + 1, len(timesteps))

        if output_type == "latent":
            return latents
        if check_cancelled is not None:
            check_cancelled()
        return self.postprocess(self.decode_latents(latents), output_type)
