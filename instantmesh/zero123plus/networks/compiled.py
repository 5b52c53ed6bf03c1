"""The views' networks through `torch.compile`: the route of torch 2.4 to 2.10, where AOTInductor packages do not load
the way `packaged` uses them.

The whole denoising step (both passes) is compiled with CUDA-graph trees (``reduce-overhead``), at the batch sizes of
`batching.BatchedStep`; the VAE decoder is compiled too (eager, it spends most of its time in channels-first copies
around its GroupNorms, docs/benchmarks.md 'The compiled step's time'). The condition's encoders run once per object
and stay eager here. Kernels are kept in the compile cache between starts, but every start traces the UNet again
(about 14 s on an H200; docs/benchmarks.md, 'Packages instead of torch.compile').
"""

from __future__ import annotations

from typing import Any

import torch

from ..reference_attention import ReferenceStep
from ..sampling import Upcoming
from .batching import BatchedStep
from .eager import EagerNetworks, VaeDecode

STEP_MODE = "reduce-overhead"
"""torch.compile's mode for the step: CUDA-graph trees (the reference pass is launch-bound)."""


class _GraphTreeStep:
    """The compiled step called as a `StepFunction`; with CUDA-graph trees each call starts a new graph step."""

    def __init__(self, compiled: Any, mark_steps: bool) -> None:
        self.compiled, self.mark_steps = compiled, mark_steps

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        reference: torch.Tensor,
        upcoming: Upcoming | None = None,
        /,
    ) -> torch.Tensor:
        if self.mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        result: torch.Tensor = self.compiled(sample, timestep, context, reference)
        return result


class CompiledNetworks:
    """`ViewsNetworks` of `eager`'s modules with the step and the decoder compiled by `torch.compile`; compilation
    happens at the first call of each batch size in `row_counts` (the worker's warm-up makes those calls)."""

    def __init__(
        self,
        eager: EagerNetworks,
        row_counts: tuple[int, ...] | list[int] = (),
        backend: str = "inductor",
        mode: str | None = STEP_MODE,
    ) -> None:
        self.eager = eager
        step = torch.compile(ReferenceStep(eager.unet, eager.dtype), backend=backend, mode=mode, dynamic=False)
        self.batched = BatchedStep(_GraphTreeStep(step, mode == STEP_MODE), row_counts)
        self._decode = torch.compile(VaeDecode(eager.vae), backend=backend, dynamic=False)

    @property
    def device(self) -> torch.device:
        return self.eager.device

    @property
    def dtype(self) -> torch.dtype:
        return self.eager.dtype

    def step(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_sample: torch.Tensor,
        upcoming: Upcoming | None = None,
    ) -> torch.Tensor:
        return self.batched(sample, timestep, encoder_hidden_states, reference_sample, upcoming)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self._decode(latents)
        return result

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.eager.encode(pixels)

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.eager.image_embeds(pixels)

    def prompt_embeds(self, prompt: str) -> torch.Tensor:
        return self.eager.prompt_embeds(prompt)
