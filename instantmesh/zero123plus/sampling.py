"""The denoising loop of Zero123++ for one object or several at once.

Several objects share each step's UNet work (one batch through the reference and main passes) and the
scheduler's per-element arithmetic: every object keeps its own generator, its own latents and its own
callbacks, and its random draws happen in the same order as when it runs alone. An object's result
therefore depends only on its own inputs; where it sits in a batch, and who it shares the batch with, only
changes the UNet's batch size (exact on the CPU in our tests, within fp16 rounding on CUDA).

An object whose cancel check raises, or whose conditioning fails, leaves the batch with that exception; the
others go on.

Each step tells the UNet step what the next step's reference sample will be (`upcoming`): the reference pass
depends on the condition latents and that step's noise only, so a compiled step runs it beside this step's main
pass (`overlapped_step`). The condition noise of step i+1 is therefore drawn right after the ancestral noise of
step i, which is where a run alone draws it anyway.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .euler_ancestral import EulerAncestralSchedule
from .host_to_device import upload

ProgressCallback = Callable[[int, int], None]
CancelCheck = Callable[[], None]
Upcoming = tuple[torch.Tensor, torch.Tensor]
"""The next step's (timestep, reference sample); its encoder hidden states are this step's, the same tensor."""


class StepFunction(Protocol):
    """(sample, timestep, encoder_hidden_states, reference_sample, upcoming) -> float32 noise prediction. `upcoming`
    may be ignored; a step that uses it is handed those very tensors (identical objects) at the next call."""

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_sample: torch.Tensor,
        upcoming: Upcoming | None = None,
        /,
    ) -> torch.Tensor: ...


STEPS_AHEAD = 2
"""Steps queued on a GPU beyond the last finished one (`StepPacer`): enough to keep it busy while the CPU
prepares the next, few enough that progress stays true and a cancel acts within two steps."""


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Float32 normal noise from `generator`, or from the global RNG of `device` when there is none.

    Always float32, because torch does not promise the same half-precision draws as float32
    ones for a seed. A generator on another device (typically a CPU generator for a CUDA run)
    draws on its own device, so a seed gives the same noise on any hardware; the draw reaches a GPU
    through pinned memory without blocking, so the loop never waits for the GPU to drain.
    """
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=torch.float32)
    return upload(torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32), device)


class StepEvent(Protocol):
    """What `StepPacer` needs of a CUDA event (the tests pass a stand-in)."""

    def record(self) -> None: ...
    def synchronize(self) -> None: ...


class StepPacer:
    """Keeps at most `ahead` denoising steps queued on the GPU beyond the last one known finished.

    Each step's `done` (its progress reports) runs once the GPU has finished that step (an event recorded after
    it): the CPU prepares the next steps meanwhile, yet progress is true and a cancel takes effect within
    `ahead` steps. Without events (a CPU device), and with `ahead` 0, `done` runs once the step has finished.
    """

    def __init__(self, ahead: int, new_event: Callable[[], StepEvent] | None) -> None:
        self.ahead = ahead
        self.new_event = new_event
        self.pending: deque[tuple[StepEvent, Callable[[], None]]] = deque()

    def queued(self, done: Callable[[], None]) -> None:
        if self.new_event is None:
            done()
            return
        event = self.new_event()
        event.record()
        self.pending.append((event, done))
        while len(self.pending) > self.ahead:
            self._finish_oldest()

    def drain(self) -> None:
        while self.pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        event, done = self.pending.popleft()
        event.synchronize()
        done()


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


@dataclass
class StepInputs:
    """What a step shares between the live runs: the runs, their hidden states and that step's reference samples."""

    runs: list[ObjectRun]
    context: torch.Tensor
    references: torch.Tensor

    def same_runs(self, runs: Sequence[ObjectRun]) -> bool:
        return len(runs) == len(self.runs) and all(a is b for a, b in zip(runs, self.runs, strict=True))


def denoise(
    runs: Sequence[ObjectRun],
    schedule: EulerAncestralSchedule,
    step: StepFunction,
    guidance_scale: float,
    latent_shape: tuple[int, ...],
    device: torch.device,
    steps_ahead: int = STEPS_AHEAD,
) -> None:
    """Denoise every run in place (its `latents`), sharing each step's UNet call between the live runs.

    The Euler-ancestral `schedule`'s arithmetic is per element (every run is at the same
    step) and each row's ancestral noise comes from its own generator. Per object and per step, in this order:
    the cancel check, the condition noise, the ancestral noise: exactly the draws of a run alone (the next step's
    condition noise is drawn before this step's UNet call, for `upcoming`). Progress is reported once the GPU has
    finished a step (`StepPacer`), to the runs still in the batch.
    """
    if len(runs) > 1 and any(run.generator is None for run in runs):
        raise ValueError("a batch of several objects needs one generator per object")
    do_cfg = guidance_scale > 1.0
    pacer = StepPacer(steps_ahead, torch.cuda.Event if device.type == "cuda" else None)
    for run in runs:
        if run.error is None:
            run.latents = randn(latent_shape, run.generator, device) * schedule.init_noise_sigma
    timesteps = list(
        schedule.timesteps
    )  # one tensor per step, the same object each time: `upcoming` is matched by identity
    drawn: dict[int, torch.Tensor] = {}
    """id(run) -> its reference sample for the step about to run, drawn during the step before."""
    shared: StepInputs | None = None
    for i, t in enumerate(timesteps):
        live = [run for run in runs if run.cancel_check()]
        if not live:
            break
        if shared is None or not shared.same_runs(live):  # the first step, or an object left: drawn again where not yet
            for run in live:
                if id(run) not in drawn:
                    drawn[id(run)] = reference_sample(run, schedule.sigmas[i], device)
            shared = StepInputs(
                live, torch.cat([run.context for run in live]), torch.cat([drawn[id(run)] for run in live])
            )
        latents = torch.cat([run.latents for run in live])
        model_input = schedule.scale_model_input(
            torch.cat([torch.cat([run.latents] * 2) if do_cfg else run.latents for run in live]), i
        )
        noise = torch.cat([randn(run.latents.shape, run.generator, device) for run in live])
        following, upcoming = None, None
        if i + 1 < len(timesteps):
            drawn = {id(run): reference_sample(run, schedule.sigmas[i + 1], device) for run in live}
            following = StepInputs(live, shared.context, torch.cat([drawn[id(run)] for run in live]))
            upcoming = (timesteps[i + 1], following.references)
        output = step(model_input, t, shared.context, shared.references, upcoming)
        if do_cfg:
            uncond, cond = output.view(len(live), 2, *output.shape[1:]).unbind(1)
            output = uncond + guidance_scale * (cond - uncond)
        latents = schedule.step(output, i, latents, noise)
        for run, row in zip(live, latents.split(1), strict=True):
            run.latents = row
        pacer.queued(functools.partial(report_progress, live, i + 1, len(timesteps)))
        shared = following
    pacer.drain()


def reference_sample(run: ObjectRun, sigma: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The run's condition latents noised for a step of level `sigma` (one draw of its generator)."""
    return noise_condition_latents(run.cond_latents, sigma, randn(run.cond_latents.shape, run.generator, device))


def report_progress(runs: Sequence[ObjectRun], done: int, total: int) -> None:
    for run in runs:
        if run.error is None and run.progress is not None:
            run.progress(done, total)


def pad_rows(tensors: Sequence[torch.Tensor], rows: int) -> list[torch.Tensor]:
    """Pad every batched tensor (dim 0) to `rows` with copies of its last row; 0-d tensors pass through.

    Rows of a UNet batch never mix, so the padding changes nothing for the real rows.
    """
    return [
        t if t.dim() == 0 or t.shape[0] == rows else torch.cat([t, t[-1:].expand(rows - t.shape[0], *t.shape[1:])])
        for t in tensors
    ]
