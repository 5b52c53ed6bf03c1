"""Where one views call's time goes outside the denoising steps: each phase timed alone, the GPU drained around it.

A diagnostic call, made after the timed ones: draining the GPU at every boundary loses the overlap between the
CPU's work and the GPU's, so the phases add up to more than the call does; what they say is what each phase costs
on its own, in particular how much of the fixed part (views minus steps) is CPU work with the GPU idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import torch

PIPELINE_PHASES = ("clip_input", "encode_image", "vae_input", "encode_condition_image", "global_conditioning",
                   "negative_condition_latents", "decode_latents", "postprocess")
"""The pipeline's methods timed, in the order a call runs them (preprocessing on the CPU, encoders, decoding)."""
LOOP = "denoise"
"""The denoising loop (the steps), the pipeline module's function."""


def drain(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed_phases(pipeline: Any, seconds: dict[str, float]) -> Iterator[None]:
    """While inside, every phase of `pipeline` adds its drained wall time to ``seconds[name + "_s"]``."""
    from instantmesh.zero123plus import pipeline as pipeline_module

    device = pipeline.device

    def timing(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            drain(device)
            start = time.perf_counter()
            result = call(*args, **kwargs)
            drain(device)
            seconds[f"{name}_s"] = seconds.get(f"{name}_s", 0.0) + time.perf_counter() - start
            return result
        return timed_call

    with ExitStack() as stack:
        for name in PIPELINE_PHASES:
            stack.enter_context(mock.patch.object(pipeline, name, timing(name, getattr(pipeline, name))))
        stack.enter_context(mock.patch.object(pipeline_module, LOOP, timing(LOOP, pipeline_module.denoise)))
        yield


def views_phases(pipeline: Any, call: Callable[[], Any], steps: int) -> dict[str, float]:
    """One drained `call` (a views request) by phase, its whole time and the per-step time of its loop."""
    seconds: dict[str, float] = {}
    drain(pipeline.device)
    start = time.perf_counter()
    with timed_phases(pipeline, seconds):
        call()
    drain(pipeline.device)
    seconds["call_s"] = time.perf_counter() - start
    seconds["other_s"] = seconds["call_s"] - sum(v for k, v in seconds.items() if k != "call_s")
    seconds["loop_step_ms"] = seconds.get(f"{LOOP}_s", 0.0) / steps * 1e3
    return seconds
