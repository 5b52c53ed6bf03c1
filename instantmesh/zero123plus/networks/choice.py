"""The views' speed options, checked at worker start, and which networks (`ViewsNetworks`) each start uses.

Each option keeps the views within 2 of 255 of eager (checked on the tiny preset in the tests, measured on the GPU by
`benchmarks.fast_path`). Options that lost on the GPU (fused QKV projections, compiling the repeated blocks alone)
were removed rather than kept as opt-ins (see docs/benchmarks.md, 'Faster-compute options').
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch

from .ahead_of_time import ahead_of_time_available, version_tuple

VIEW_OPTIMIZATIONS = ("channels_last", "compile")
"""channels_last: NHWC convolutions in the UNet and VAE (`EagerNetworks.to_channels_last`). compile: the networks
compiled during load, kept on disk per machine (`compile_route`)."""

COMPILE_MIN_TORCH = (2, 4)
"""torch.compile of the step needs dynamo's support for the kwargs-borne reference pass, CUDA-graph trees under
inference mode and the FX graph cache on disk, all settled by torch 2.4."""

CompileRoute = Literal["packaged", "compiled"]


def compile_route() -> CompileRoute:
    """What ``compile`` means with this torch: AOTInductor packages (`packaged.PackagedNetworks`, torch >= 2.11: a
    second start loads them without tracing, from the views bundle) or `torch.compile` (`compiled.CompiledNetworks`,
    torch 2.4 to 2.10: every start traces the step again)."""
    return "packaged" if ahead_of_time_available() else "compiled"


def check_optimizations(optimizations: Iterable[str], device: torch.device | str | None = None) -> None:
    """Refuse, with the reason, options that are unknown or cannot work here (called at worker start)."""
    chosen = set(optimizations)
    unknown = chosen - set(VIEW_OPTIMIZATIONS)
    if unknown:
        raise ValueError(f"unknown optimization(s) {sorted(unknown)}; choose from {', '.join(VIEW_OPTIMIZATIONS)}")
    if "compile" not in chosen:
        return
    found = version_tuple(torch.__version__)
    if found < COMPILE_MIN_TORCH:
        need = ".".join(map(str, COMPILE_MIN_TORCH))
        raise ValueError(
            f"optimization 'compile' needs torch >= {need} (found {torch.__version__}); leave it out with --optimize channels_last"
        )
    if device is None:
        return
    if torch.device(device).type != "cuda":
        raise ValueError(f"optimization 'compile' is for CUDA devices (CUDA graphs); the device is {device}")
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            "optimization 'compile' needs the triton package (it comes with CUDA builds of torch)"
        ) from exc
