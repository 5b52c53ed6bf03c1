"""Which compiled denoising step is fastest: its variants measured one after another on the same loaded weights.

``python -m benchmarks.step_variants --weights DIR [--steps 75] [--variants default,cudnn,flags,autotune,autotune_mm,cudnn_benchmark] [--out DIR]``
(DIR from ``benchmarks.make_weights``). Writes step_variants.json/.md after every variant, so a run cut short
keeps what it measured. One process loads both models once (channels_last, as the default) and measures:

- peak GPU memory per phase of one eager object: load, views, mesh (which phase misses the 6 GiB goal);
- the eager step (reference + main pass, one object with guidance) under each SDPA backend;
- each compiled variant, dynamo reset before it: compile seconds, views seconds for ``--steps`` steps, the
  compiled step alone replayed back to back (the rest is what the loop adds around it), the views' max abs
  difference to eager (0..255) and peak memory. Each variant after the first adds its change to the fastest
  so far (greedy), so the last measured row is the best combination found.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpcworker.backends.base import SilentContext
from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files

from .common import last_step_inputs, synthetic_object, table, write_results
from .compute import sync
from .fast_path import MATMUL_PEAK_TFLOPS, flops_per_object
from .sessions import weight_args
from .step_profile import attention_by_backend, attention_calls, kernel_breakdown, loop_split, sdpa_backends, time_calls

CTX = SilentContext()
SEED = 42
GUIDANCE = 4.0
EAGER_STEP_REPEATS = 10
PROFILED_CALLS = 5
PROFILED_STEPS = 10


@dataclass(frozen=True)
class Variant:
    mode: str | None = "reduce-overhead"
    sdpa: str | None = None
    """None: torch's own choice; else the SDPA kernel tried first while tracing and calling (cudnn, flash, efficient)."""
    inductor: dict[str, Any] = field(default_factory=dict)
    cudnn_benchmark: bool = False
    """cuDNN times its convolution algorithms at the first call of each shape (the warm-up) and keeps the fastest."""

    def describe(self) -> str:
        parts = [f"mode={self.mode}"] + ([f"sdpa={self.sdpa}"] if self.sdpa else []) + [f"{k}={v}" for k, v in self.inductor.items()]
        parts += ["cudnn.benchmark"] if self.cudnn_benchmark else []
        return ", ".join(parts)


CHANGES: dict[str, Callable[[Variant], Variant]] = {
    "default": lambda v: v,
    "cudnn": lambda v: replace(v, sdpa="cudnn"),
    "efficient": lambda v: replace(v, sdpa="efficient"),
    "flags": lambda v: replace(v, inductor={**v.inductor, "conv_1x1_as_mm": True, "coordinate_descent_tuning": True}),
    "autotune": lambda v: replace(v, mode="max-autotune"),
    "autotune_mm": lambda v: replace(v, mode="max-autotune", inductor={**v.inductor, "conv_1x1_as_mm": True, "max_autotune_conv_backends": "ATEN"}),
    "cudnn_benchmark": lambda v: replace(v, cudnn_benchmark=True),
}


@contextlib.contextmanager
def attention_first(backend: str | None) -> Iterator[None]:
    """SDPA tries `backend` first, falling back to the others where it cannot run a shape (torch >= 2.6)."""
    if backend is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    named = sdpa_backends()
    order = [named[backend]] + [b for b in (*named.values(), SDPBackend.MATH) if b != named[backend]]
    with sdpa_kernel(order, set_priority=True):
        yield


@contextlib.contextmanager
def cudnn_benchmark(on: bool) -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def peak_gib() -> float:
    """Peak allocated since the last call, then a fresh count."""
    if not torch.cuda.is_available():
        return 0.0
    sync()
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return peak


class Bench:
    def __init__(self, weights: Path, steps: int, out: Path) -> None:
        self.steps, self.out = steps, out
        files = resolve_model_files(argparse.Namespace(**{"preset": "official", "config": None, "view_size": None, **weight_args(weights)}))
        self.view_size = files.view_size
        self.image = synthetic_object(out / "bench_object.png", 0)
        self.backend = InstantMeshBackend(files, optimizations=("channels_last",), max_batch=1)
        self.results: dict[str, Any] = {"steps": steps, "memory_eager_gib": {}, "eager_step_ms": {}, "variants": []}
        memory = self.results["memory_eager_gib"]
        peak_gib()
        self.backend.load(["views", "mesh"], CTX)
        memory["load"] = peak_gib()
        self.pipeline = self.backend._pipeline
        from PIL import Image

        self.pil = Image.open(self.image)
        self.captured = last_step_inputs(self.backend, self.pil, SEED, GUIDANCE)
        t = time.perf_counter()
        generated = self.backend.generate_views(self.pil, SEED, steps, GUIDANCE, CTX)
        self.results["views_eager_s"] = time.perf_counter() - t
        memory["views"] = peak_gib()
        self.eager = np.asarray(generated.grid).astype(np.int16)
        self.backend.reconstruct(generated.views, False, CTX)
        memory["mesh"] = peak_gib()
        self.results["flops_per_object"] = flops_per_object(self.pipeline, self.pil, steps, self.view_size)

    def eager_steps(self) -> None:
        from instantmesh.zero123plus.reference_attention import ReferenceStep

        step = ReferenceStep(self.pipeline.unet, self.pipeline.unet.dtype)
        for backend in (None, "flash", "cudnn", "efficient"):
            try:
                with attention_first(backend), torch.inference_mode():
                    self.results["eager_step_ms"][backend or "torch default"] = 1000 * time_calls(lambda: step(*self.captured), EAGER_STEP_REPEATS, sync)
            except Exception as exc:  # a backend this build lacks: say so and go on
                self.results["eager_step_ms"][backend or "torch default"] = f"failed: {str(exc).splitlines()[0][:200]}"

    def variant(self, name: str, variant: Variant) -> dict[str, Any]:
        from instantmesh.zero123plus.speed import optimize_views

        row: dict[str, Any] = {"name": name, "variant": variant.describe()}
        self.pipeline.fast_step = None
        self.pipeline.fast_step_plan = lambda *tensors: None
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
        peak_gib()
        try:
            import torch._functorch.config as functorch_config
            import torch._inductor.config as inductor_config

            # The graph caches key on the traced graph, where SDPA is not yet a kernel choice: bypass them for an
            # SDPA variant, or it gets the graph compiled for the default kernel back.
            fresh = {"fx_graph_cache": False} if variant.sdpa else {}
            with inductor_config.patch({**variant.inductor, **fresh}), functorch_config.patch(enable_autograd_cache=not variant.sdpa), \
                    attention_first(variant.sdpa), cudnn_benchmark(variant.cudnn_benchmark):
                optimize_views(self.pipeline, ["compile"], compile_mode=variant.mode, row_counts=[2])
                t = time.perf_counter()
                self.backend.generate_views(self.pil, SEED, 3, GUIDANCE, CTX)
                row["compile_s"] = time.perf_counter() - t
                runs = []
                for _ in range(2):
                    t = time.perf_counter()
                    generated = self.backend.generate_views(self.pil, SEED, self.steps, GUIDANCE, CTX)
                    runs.append(time.perf_counter() - t)
                row["views_s"], row["views_runs_s"] = min(runs), runs
                step = self.pipeline.fast_step
                row["step_alone_ms"] = 1000 * time_calls(lambda: step(*self.captured), self.steps, sync)
                row["loop_step_ms"] = 1000 * row["views_s"] / self.steps
                row["views_max_abs_diff"] = int(np.abs(np.asarray(generated.grid).astype(np.int16) - self.eager).max())
                row["mfu"] = self.results["flops_per_object"] / row["views_s"] / (MATMUL_PEAK_TFLOPS * 1e12)
                row["peak_gib"] = peak_gib()
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        return row

    def profile(self) -> dict[str, Any]:
        """The loaded compiled step's kernels, the fixed part of the views, the attention under each SDPA kernel."""
        from instantmesh.zero123plus.reference_attention import ReferenceStep

        step, found = self.pipeline.fast_step, {}
        with torch.inference_mode():
            found["compiled_step"] = kernel_breakdown(lambda: step(*self.captured), PROFILED_CALLS, sync)
        found["views_few_steps"] = kernel_breakdown(lambda: self.backend.generate_views(self.pil, SEED, PROFILED_STEPS, GUIDANCE, CTX), 1, sync)
        found["loop"] = loop_split(self.views_seconds, self.steps)
        eager = ReferenceStep(self.pipeline.unet, self.pipeline.unet.dtype)
        found["attention"] = attention_by_backend(attention_calls(lambda: eager(*self.captured)), sync)
        return found

    def views_seconds(self, steps: int) -> float:
        sync()
        start = time.perf_counter()
        self.backend.generate_views(self.pil, SEED, steps, GUIDANCE, CTX)
        return time.perf_counter() - start


def render(results: dict[str, Any]) -> str:
    memory = ", ".join(f"{k} {v:.2f}" for k, v in results["memory_eager_gib"].items())
    eager = ", ".join(f"{k} {v:.1f} ms" if isinstance(v, float) else f"{k} {v}" for k, v in results["eager_step_ms"].items())
    rows = [["eager (channels_last)", "-", results["views_eager_s"], "-", "-", "0", "-", f"peak GiB per phase: {memory}"]]
    rows.append(["eager step by SDPA backend", "-", "-", "-", "-", "-", "-", eager])
    for r in results["variants"]:
        if "error" in r:
            rows.append([r["name"], r["variant"], "-", "-", "-", "-", "-", r["error"]])
            continue
        rows.append([r["name"], r["variant"], r["views_s"], r["step_alone_ms"], r["loop_step_ms"], r["views_max_abs_diff"],
                     r["compile_s"], f"MFU {r['mfu']:.1%}, peak {r['peak_gib']:.2f} GiB"])
    if "profile" in results:
        rows += profile_rows(results["profile"])
    title = f"Compiled step variants on {results['gpu']} (torch {results['torch']}, {results['steps']} steps, one object)"
    headers = ["variant", "settings", "views s", "step alone ms", "loop ms/step", "max diff", "compile s", "notes"]
    return table(title, headers, rows)


def profile_rows(found: dict[str, Any]) -> list[list[Any]]:
    """The profile as notes rows of the variants table."""
    def kinds(part: dict[str, Any]) -> str:
        if not part.get("kernels_seen"):
            return "no kernels seen by the profiler"
        shares = ", ".join(f"{k} {v:.2f}" for k, v in part["ms_per_call_by_kind"].items())
        return f"GPU busy {part['gpu_busy_ms_per_call']:.2f} of {part['gpu_span_ms_per_call']:.2f} ms; by kind (ms): {shares}"

    loop, attention = found["loop"], found["attention"]["ms_per_step"]
    return [
        ["profile: compiled step", "first variant", "-", "-", "-", "-", "-", kinds(found["compiled_step"])],
        ["profile: views, few steps", f"{PROFILED_STEPS} steps", "-", "-", "-", "-", "-", kinds(found["views_few_steps"])],
        ["profile: loop split", "first variant", loop["views_s"], "-", loop["loop_step_ms"], "-", "-", f"fixed part {loop['fixed_s']:.3f} s"],
        ["profile: step's attention by SDPA kernel", "eager shapes", "-", "-", "-", "-", "-",
         ", ".join(f"{k} {v:.2f} ms/step" for k, v in attention.items())],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--variants", default=",".join(CHANGES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu-h200"))
    parser.add_argument("--profile", action="store_true", help="after the first variant: its kernels, the fixed part, SDPA kernels")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.weights, args.steps, args.out)
    results = bench.results
    results["torch"] = torch.__version__
    results["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    bench.eager_steps()
    write_results(args.out, "step_variants", results)
    best: tuple[float, Variant] | None = None
    for name in filter(None, args.variants.split(",")):
        variant = CHANGES[name](best[1] if best else Variant())
        row = bench.variant(name, variant)
        results["variants"].append(row)
        print(row, flush=True)
        if args.profile and "profile" not in results and "views_s" in row:
            results["profile"] = bench.profile()
            print(results["profile"], flush=True)
        if "views_s" in row and row["views_max_abs_diff"] <= 2 and (best is None or row["views_s"] < best[0]):
            best = (row["views_s"], variant)
        write_results(args.out, "step_variants", results)
        (args.out / "step_variants.md").write_text(render(results))
    results["best"] = best[1].describe() if best else None
    write_results(args.out, "step_variants", results)
    (args.out / "step_variants.md").write_text(render(results))
    print(render(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
