"""Speed options for a loaded Zero123++ pipeline, applied in place.

Each keeps the views within fp16 rounding of eager (checked on the tiny preset in the tests, measured on the
GPU in `benchmarks.compute`); which ones are worth it, and when, is the backend's decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .reference_attention import fuse_reference_attention

VIEW_OPTIMIZATIONS = ("channels_last", "fused_qkv", "compile", "compile_blocks")
"""channels_last: NHWC convolutions in the UNet and VAE. fused_qkv: one projection for Q, K and V.
compile: torch.compile of the whole UNet (minutes). compile_blocks: torch.compile of each transformer
block, the UNet's repeated part (compiled once and reused, so far less compile time)."""


def check_optimizations(optimizations: Iterable[str]) -> None:
    chosen = set(optimizations)
    unknown = chosen - set(VIEW_OPTIMIZATIONS)
    if unknown:
        raise ValueError(f"unknown optimization(s) {sorted(unknown)}; choose from {', '.join(VIEW_OPTIMIZATIONS)}")
    if {"compile", "compile_blocks"} <= chosen:
        raise ValueError("choose compile or compile_blocks, not both")


def optimize_views(pipeline: Any, optimizations: Iterable[str], compile_backend: str = "inductor") -> None:
    chosen = set(optimizations)
    check_optimizations(chosen)
    if "channels_last" in chosen:
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
    if "fused_qkv" in chosen:
        pipeline.reference_bank = fuse_reference_attention(pipeline.unet)
    if "compile" in chosen:
        pipeline.unet.compile(backend=compile_backend)
    if "compile_blocks" in chosen:
        pipeline.unet.compile_repeated_blocks(backend=compile_backend)
