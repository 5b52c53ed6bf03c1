"""The denoising loop of Zero123++ for one object or several at once.

Several objects share each step's UNet work (one batch through the reference and main passes) and the
scheduler's per-element arithmetic: every object keeps its own generator, its own latents and its own
callbacks, and its random draws happen in the same order as when it runs alone. An object's result
therefore depends only on its own inputs; where it sits in a batch, and who it shares the batch with, only
changes the UNet's batch size (exact on the CPU in our tests, within fp16 rounding on CUDA).

An object whose cancel check raises, or whose conditioning fails, leaves the batch with that exception; the
others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

ProgressCallback = Callable[[int, int], None]
CancelCheck = Callable[[], None]
StepFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(sample, timestep, encoder_hidden_states, reference_sample) -> float32 noise prediction."""


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Float32 normal noise from `generator`, or from the global RNG of `device` when there is none.

    Always float32, because torch does not promise the same half-precision draws as float32
    ones for a seed. A generator on another device (typically a CPU generator for a CUDA run)
    draws on its own device, so a seed gives the same noise on any hardware.
    """
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=torch.float32)
    noise = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device)


@dataclass
class ObjectRun:
    """One object's state through the loop. `error` set: the object has left the batch."""

    cond_latents: torch.Tensor
    """[rows, 4, h, w] raw VAE latents of the condition image (negative first with guidance)."""
    context: torch.Tensor
    """[rows, 77, C] encoder hidden states (negative first with guidance)."""
    generator: torch.Generator | None
    progress: ProgressCallback | None = None
    check_cancelled: CancelCheck | None = None
    latents: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    """[1, 4, h, w] in the scheduler's space, once denoising has begun."""
    error: BaseException | None = field(default=None, repr=False)

    def cancel_check(self) -> bool:
        """Runs the object's cancel check; False (with the error kept) once it has left the batch."""
        if self.error is None and self.check_cancelled is not None:
            try:
                self.check_cancelled()
            except Exception as exc:
                self.error = exc
        return self.error is None


def noise_condition_latents(cond_latents: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Noise the condition latents to the current step's level and scale them like a model input."""
    return (cond_latents + noise * sigma) / (sigma**2 + 1) ** 0.5


def denoise(
    runs: Sequence[ObjectRun],
    scheduler: Any,
    step: StepFunction,
    num_inference_steps: int,
    guidance_scale: float,
    latent_shape: tuple[int, ...],
    device: torch.device,
) -> None:
    """Denoise every run in place (its `latents`), sharing each step's UNet call between the live runs.

    The scheduler is shared (its arithmetic is per element; every run is at the same step) and draws its
    ancestral noise with one generator per row. Per object and per step, in this order: the cancel check,
    the condition noise, the scheduler's noise, then progress: exactly the draws and calls of a run alone.
    """
    if len(runs) > 1 and any(run.generator is None for run in runs):
        raise ValueError("a batch of several objects needs one generator per object")
    do_cfg = guidance_scale > 1.0
    scheduler.set_timesteps(num_inference_steps, device=device)
    for run in runs:
        if run.error is None:
            run.latents = randn(latent_shape, run.generator, device) * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        live = [run for run in runs if run.cancel_check()]
        if not live:
            return
        sigma = scheduler.sigmas[i].to(device=device, dtype=torch.float32)
        references = [noise_condition_latents(run.cond_latents, sigma, randn(run.cond_latents.shape, run.generator, device)) for run in live]
        latents = torch.cat([run.latents for run in live])
        model_input = scheduler.scale_model_input(torch.cat([torch.cat([run.latents] * 2) if do_cfg else run.latents for run in live]), t)
        output = step(model_input, t, torch.cat([run.context for run in live]), torch.cat(references))
        if do_cfg:
            uncond, cond = output.view(len(live), 2, *output.shape[1:]).unbind(1)
            output = uncond + guidance_scale * (cond - uncond)
        generators = [run.generator for run in live]
        latents = scheduler.step(output, t, latents, generator=generators[0] if len(live) == 1 else generators, return_dict=False)[0]
        for run, row in zip(live, latents.split(1), strict=True):
            run.latents = row
            if run.progress is not None:
                run.progress(i + 1, len(timesteps))
