"""Where the compiled step's GPU time goes: kernels by kind, the attention under each SDPA kernel, the fixed part.

Used by ``benchmarks.step_variants --profile`` on the loaded weights, after its first variant:

- ``kernel_breakdown``: torch.profiler around a few calls; GPU kernel time by kind (attention, convolution, matmul,
  Inductor's fused Triton kernels, copies, other), the top kernels, and how busy the GPU was over the span;
- ``attention_calls`` + ``attention_by_backend``: every SDPA call of one eager step (shapes and counts), then each
  distinct shape timed alone under each SDPA kernel: what the step's attention costs with each;
- ``loop_split``: the views at two step counts, so the per-step cost and the fixed part (encoders, VAE decode,
  grid) separate.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch

KERNEL_KINDS = (
    ("triton (fused)", ("triton",)),
    ("attention", ("flash", "fmha", "sdpa", "attention", "attn")),
    ("convolution", ("fprop", "conv", "implicit_convolve", "wgrad", "dgrad")),
    ("matmul", ("gemm", "nvjet", "cutlass", "cublas", "sm90_xmma", "sm80_xmma")),
    ("copy", ("memcpy", "memset", "copy")),
)
"""Kernel kinds, matched in this order by name fragments (Inductor's, then cuDNN's, cuBLAS's and flash's naming)."""
TOP_KERNELS = 15
ATTENTION_BACKENDS = ("flash", "efficient", "cudnn")
ATTENTION_REPEATS = 20


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, fragments in KERNEL_KINDS if any(f in lowered for f in fragments)), "other")


def kernel_breakdown(call: Callable[[], Any], calls: int, synchronize: Callable[[], None]) -> dict[str, Any]:
    """GPU kernel milliseconds per call by kind, the top kernels, and busy/span of the GPU during the calls."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    call()
    synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        synchronize()
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    if not kernels:
        return {"kernels_seen": 0}
    by_kind: Counter[str] = Counter()
    by_name: Counter[str] = Counter()
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    for e in kernels:
        us = e.time_range.end - e.time_range.start
        by_kind[kernel_kind(e.name)] += us
        by_name[e.name[:120]] += us
    busy, covered_to = 0.0, spans[0][0]
    for start, end in spans:  # the union of kernel intervals (streams may overlap)
        if end > covered_to:
            busy += end - max(start, covered_to)
            covered_to = end
    span_us = spans[-1][1] - spans[0][0]
    per_call = 1000.0 * calls
    return {
        "kernels_seen": len(kernels) // calls,
        "gpu_busy_ms_per_call": busy / per_call,
        "gpu_span_ms_per_call": span_us / per_call,
        "ms_per_call_by_kind": {k: v / per_call for k, v in by_kind.most_common()},
        "top_kernels_ms_per_call": {k: v / per_call for k, v in by_name.most_common(TOP_KERNELS)},
    }


@contextlib.contextmanager
def recording_attention(calls: Counter[tuple[Any, ...]]) -> Iterator[None]:
    """Counts SDPA calls by (query shape, key shape, dtype, masked) while inside."""
    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention

    def recorder(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls[(tuple(query.shape), tuple(key.shape), str(query.dtype), attn_mask is not None)] += 1
        return original(query, key, value, attn_mask, *args, **kwargs)

    functional.scaled_dot_product_attention = recorder
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


def attention_calls(step: Callable[[], Any]) -> Counter[tuple[Any, ...]]:
    calls: Counter[tuple[Any, ...]] = Counter()
    with recording_attention(calls), torch.inference_mode():
        step()
    return calls


def sdpa_backends() -> dict[str, Any]:
    """The fused SDPA kernels by the names the benchmarks use (torch.nn.attention, torch >= 2.3)."""
    from torch.nn.attention import SDPBackend

    return {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}


def attention_by_backend(calls: Counter[tuple[Any, ...]], synchronize: Callable[[], None], device: str = "cuda") -> dict[str, Any]:
    """Each distinct SDPA shape timed under each kernel (heads-last layout, as diffusers makes it); per-step totals."""
    from torch.nn.attention import sdpa_kernel

    named = sdpa_backends()
    shapes, totals = [], dict.fromkeys(ATTENTION_BACKENDS, 0.0)
    for (q_shape, k_shape, dtype, masked), count in sorted(calls.items(), key=lambda kv: -kv[0][0][2] * kv[0][1][2]):
        row: dict[str, Any] = {"query": list(q_shape), "key": list(k_shape), "masked": masked, "calls_per_step": count}
        for backend in ATTENTION_BACKENDS:
            try:
                with sdpa_kernel([named[backend]]):
                    seconds, flop = time_attention(q_shape, k_shape[2], getattr(torch, dtype.split(".")[-1]), device, synchronize)
                row[f"{backend}_ms"] = 1000 * seconds
                row[f"{backend}_tflops"] = flop / seconds / 1e12
                totals[backend] += 1000 * seconds * count
            except Exception as exc:  # a kernel that cannot run this shape: say so
                row[f"{backend}_ms"] = f"failed: {str(exc).splitlines()[0][:120]}"
                totals[backend] = float("nan")
        shapes.append(row)
    return {"shapes": shapes, "ms_per_step": totals}


def time_attention(
    q_shape: tuple[int, ...], keys: int, dtype: torch.dtype, device: str, synchronize: Callable[[], None]
) -> tuple[float, int]:
    """Seconds of one SDPA call on random tensors laid out heads-last (as diffusers makes them), and its FLOPs."""
    batch, heads, queries, dim = q_shape
    q, k, v = (torch.randn(batch, n, heads, dim, device=device, dtype=dtype).transpose(1, 2) for n in (queries, keys, keys))
    seconds = time_calls(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), ATTENTION_REPEATS, synchronize)
    return seconds, 4 * batch * heads * queries * keys * dim


def time_calls(call: Callable[[], Any], repeats: int, synchronize: Callable[[], None]) -> float:
    """Seconds per call, back to back after two warm calls, in inference mode."""
    with torch.inference_mode():
        call()
        call()
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        synchronize()
    return (time.perf_counter() - start) / repeats


def loop_split(views_seconds: Callable[[int], float], steps: int) -> dict[str, float]:
    """The views at `steps` and at a third of them: seconds per loop step and the fixed part (best of two each)."""
    few = max(1, steps // 3)
    long = min(views_seconds(steps) for _ in range(2))
    short = min(views_seconds(few) for _ in range(2))
    per_step = (long - short) / (steps - few)
    return {"views_s": long, f"views_{few}_steps_s": short, "loop_step_ms": 1000 * per_step, "fixed_s": long - steps * per_step}
