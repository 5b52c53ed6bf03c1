"""The Euler-ancestral sampler's arithmetic, taken out of diffusers' scheduler so the loop never waits on the GPU.

`EulerAncestralDiscreteScheduler.step` draws its noise from the (CPU) generators and copies it to the device
with a blocking copy, which waits for the GPU to finish the step before the next can be queued: the GPU idles
between steps (see docs/benchmarks.md, 'The compiled step's time'). Here the schedule still comes from the scheduler
(`set_timesteps`), the arithmetic is the scheduler's own, in the same order on the same CPU float32 scalars
(equal bit for bit, tested against it), and the noise is an argument, drawn by the caller and copied without
blocking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .host_to_device import upload

PREDICTION_TYPES = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


class EulerAncestralSchedule:
    """One run's schedule: timesteps on the device, sigmas as CPU float32 scalars (as the scheduler keeps them)."""

    def __init__(self, scheduler: Any, num_inference_steps: int, device: torch.device) -> None:
        self.prediction_type = _checked_prediction_type(scheduler.config.prediction_type)
        scheduler.set_timesteps(num_inference_steps, device=device)
        self.timesteps: torch.Tensor = scheduler.timesteps
        self.sigmas = scheduler.sigmas.to("cpu", torch.float32)
        """Some diffusers versions keep them on the device: one copy here, none per step."""
        self.init_noise_sigma = scheduler.init_noise_sigma

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], num_inference_steps: int, device: torch.device
    ) -> EulerAncestralSchedule:
        """The same schedule from the scheduler's config alone (a start without diffusers): its betas, spacing and
        interpolation, in the scheduler's dtypes (float32 betas and cumulative products, numpy interpolation)."""
        beta_schedule = config.get("beta_schedule", "linear")
        spacing = config.get("timestep_spacing", "linspace")
        if beta_schedule not in BETA_SCHEDULES or spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"schedule {beta_schedule!r} with spacing {spacing!r} is not supported; choose from "
                f"{', '.join(BETA_SCHEDULES)} and {', '.join(TIMESTEP_SPACINGS)}"
            )
        if config.get("trained_betas") is not None or config.get("rescale_betas_zero_snr"):
            raise ValueError("trained betas and zero-SNR rescaling are not supported")
        schedule = cls.__new__(cls)
        schedule.prediction_type = _checked_prediction_type(config.get("prediction_type", "epsilon"))
        train_steps = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
        if beta_schedule == "linear":
            betas = torch.linspace(start, end, train_steps, dtype=torch.float32)
        else:
            betas = torch.linspace(start**0.5, end**0.5, train_steps, dtype=torch.float32) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if spacing == "linspace":
            timesteps = np.linspace(0, train_steps - 1, num_inference_steps, dtype=np.float32)[::-1].copy()
        elif spacing == "leading":
            ratio = train_steps // num_inference_steps
            timesteps = (np.arange(0, num_inference_steps) * ratio).round()[::-1].copy().astype(np.float32)
            timesteps += int(config.get("steps_offset", 0))
        else:
            timesteps = (
                np.arange(train_steps, 0, -train_steps / num_inference_steps).round().copy().astype(np.float32) - 1
            )
        all_sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).numpy()
        sigmas = np.concatenate([np.interp(timesteps, np.arange(0, len(all_sigmas)), all_sigmas), [0.0]]).astype(
            np.float32
        )
        schedule.sigmas = torch.from_numpy(sigmas)
        schedule.timesteps = upload(torch.from_numpy(timesteps), device)
        peak = schedule.sigmas.max()
        schedule.init_noise_sigma = peak if spacing in ("linspace", "trailing") else (peak**2 + 1) ** 0.5
        return schedule

    def scale_model_input(self, sample: torch.Tensor, index: int) -> torch.Tensor:
        sigma = self.sigmas[index]
        return sample / ((sigma**2 + 1) ** 0.5)

    def step(self, model_output: torch.Tensor, index: int, sample: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The sample at step `index + 1` from the model output at step `index`; `noise` like `model_output`."""
        sample = sample.to(torch.float32)
        sigma = self.sigmas[index]
        if self.prediction_type == "epsilon":
            pred_original = sample - sigma * model_output
        else:
            pred_original = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
        sigma_to = self.sigmas[index + 1]
        sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        derivative = (sample - pred_original) / sigma
        prev_sample = sample + derivative * (sigma_down - sigma)
        return (prev_sample + noise * sigma_up).to(model_output.dtype)


def _checked_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {prediction_type!r} is not supported; choose from {', '.join(PREDICTION_TYPES)}"
        )
    return prediction_type
