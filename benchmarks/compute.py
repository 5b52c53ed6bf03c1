"""Faster compute on the GPU: each option against eager fp16 in the same run, with its output difference.

Parts (``--parts``, comma-separated; each fits one device call on its own):
- ``load``: load time per model, and safetensors vs pickle-free torch.load for the LRM checkpoint;
- ``views``: Zero123++ (the dominant cost) eager with SDPA attention (the baseline), math attention, then
  the backend's own speed options, each on a freshly loaded pipeline (channels_last; compile time reported
  apart, as the first call);
- ``compile``: the compiled denoising step with CUDA graphs (minutes of compilation; benchmarks.fast_path has
  the full comparison);
- ``sampler``: a deterministic Euler sampler with fewer steps (a documented trade-off: another image, so
  its difference is reported, not required to be small);
- ``mesh``: the LRM eager fp32, bf16 autocast, and torch.compile.

``python -m benchmarks.compute --weights DIR [--steps 75] [--parts load,views,sampler,mesh] [--out DIR]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instantmesh.lrm.checkpoint import read_lrm_state_dict, save_lrm_checkpoint
from rpcworker.backends.base import SilentContext
from rpcworker.backends.instantmesh import InstantMeshBackend, ModelFiles, resolve_model_files

from .common import synthetic_object, table, write_results
from .sessions import weight_args

PARTS = ("load", "views", "compile", "sampler", "mesh")
DEFAULT_PARTS = ("load", "views", "sampler", "mesh")
VIEW_OPTIONS = (("channels_last",),)
COMPILE_OPTIONS = (("channels_last", "compile"),)
CTX = SilentContext()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def row(what: str, seconds: float, speedup: float = 1.0, difference: float | str = "-", first_call_s: float | None = None) -> dict[str, Any]:
    return {"what": what, "seconds": seconds, "speedup": speedup, "difference": difference, "first_call_s": "-" if first_call_s is None else first_call_s}


def views_of(backend: InstantMeshBackend, image: Any, steps: int) -> np.ndarray:
    generated = backend.generate_views(image, 42, steps, 4.0, CTX)
    return np.asarray(generated.grid, dtype=np.float32) / 255.0


class Views:
    """The eager fp16 baseline, kept loaded, and fresh backends with speed options measured against it."""

    def __init__(self, files: ModelFiles, image: Any, steps: int, rows: list[dict[str, Any]]) -> None:
        self.files, self.image, self.steps, self.rows = files, image, steps, rows
        self.backend = InstantMeshBackend(files, optimizations=())
        self.backend.load(["views"], CTX)
        self.first_call_s, _ = timed(lambda: views_of(self.backend, image, 2))
        self.seconds, self.out = timed(lambda: views_of(self.backend, image, steps))
        self.add(f"views: eager fp16, SDPA attention, {steps} steps (baseline)", self.seconds, self.out, self.first_call_s)

    def add(self, what: str, seconds: float, out: np.ndarray | str, first_call_s: float | None = None) -> None:
        difference = out if isinstance(out, str) else float(np.abs(out - self.out).max())
        self.rows.append(row(what, seconds, self.seconds / seconds, difference, first_call_s))

    def math_attention(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        from instantmesh.zero123plus.reference_attention import install_reference_attention

        pipeline = self.backend._pipeline

        def use(processor: Any) -> None:
            pipeline.unet.set_attn_processor(processor)
            install_reference_attention(pipeline.unet)

        use(AttnProcessor())
        t, out = timed(lambda: views_of(self.backend, self.image, self.steps))
        self.add("views: math attention (no SDPA)", t, out)
        use(AttnProcessor2_0())

    def option(self, optimizations: tuple[str, ...]) -> None:
        """The first 2-step call includes any compilation; the gap to the baseline's first call is its cost."""
        backend = InstantMeshBackend(self.files, optimizations=optimizations)
        backend.load(["views"], CTX)
        first, _ = timed(lambda: views_of(backend, self.image, 2))
        t, out = timed(lambda: views_of(backend, self.image, self.steps))
        self.add(f"views: --optimize {','.join(optimizations)}", t, out, first)
        backend.unload(["views"])

    def sampler(self) -> None:
        from diffusers import EulerDiscreteScheduler

        pipeline = self.backend._pipeline
        ancestral = pipeline.scheduler
        # Deterministic Euler with Karras sigmas keeps the sigma parametrisation the reference noising uses.
        pipeline.scheduler = EulerDiscreteScheduler.from_config(ancestral.config, use_karras_sigmas=True)
        fewer = max(2, self.steps * 2 // 5)
        t, out = timed(lambda: views_of(self.backend, self.image, fewer))
        self.add(f"views: Euler (Karras sigmas) {fewer} steps, eager (trade-off: another sampler, another image)", t, out)
        pipeline.scheduler = ancestral


def load_rows(files: ModelFiles, weights: Path, rows: list[dict[str, Any]]) -> None:
    backend = InstantMeshBackend(files, max_batch=1)
    for name, seconds in backend.load(["views", "mesh"], CTX).items():
        rows.append(row(f"load {name} (default options)", seconds))
    backend.unload(["views", "mesh"])
    ckpt = files.lrm
    st = weights / f"{ckpt.stem}.safetensors"
    save_lrm_checkpoint(read_lrm_state_dict(ckpt), st)
    t_ckpt, _ = timed(lambda: read_lrm_state_dict(ckpt))
    t_st, _ = timed(lambda: read_lrm_state_dict(st))
    rows.append(row("read LRM .ckpt (torch.load, weights_only)", t_ckpt))
    rows.append(row("read LRM .safetensors", t_st, t_ckpt / t_st))


def mesh_rows(files: ModelFiles, image: Any, rows: list[dict[str, Any]], compile_lrm: bool) -> None:
    backend = InstantMeshBackend(files, max_batch=1)
    generated = backend.generate_views(image, 42, 2, 4.0, CTX)
    backend.unload(["views"])

    def mesh() -> Any:
        return backend.reconstruct(generated.views, False, CTX)

    def difference(m: Any) -> str:
        if len(m.vertices) != len(m0.vertices):
            return f"{len(m.vertices)} vertices: a different mesh"
        return f"max |Δv| {float(np.abs(m.vertices - m0.vertices).max()):.2e}"

    mesh()
    t0, m0 = timed(mesh)
    rows.append(row("mesh: eager fp32 LRM + FlexiCubes", t0, difference=f"{len(m0.vertices)} vertices"))
    with torch.autocast(backend.device.type, dtype=torch.bfloat16):
        mesh()
        t, m1 = timed(mesh)
    rows.append(row("mesh: bf16 autocast", t, t0 / t, difference(m1)))
    if compile_lrm:
        backend._mesh.lrm.encoder.compile()
        backend._mesh.lrm.transformer.compile()
        first, _ = timed(mesh)
        t, m2 = timed(mesh)
        rows.append(row("mesh: torch.compile encoder + transformer", t, t0 / t, difference(m2), first))
    backend.unload(["mesh"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"comma list of {', '.join(PARTS)}")
    parser.add_argument("--no-compile", action="store_true", help="skip every torch.compile (a quick CPU smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compute"))
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        parser.error(f"unknown part(s) {sorted(set(parts) - set(PARTS))}; choose from {', '.join(PARTS)}")
    from PIL import Image

    files = resolve_model_files(argparse.Namespace(**{"preset": "official", "config": None, "view_size": None, **weight_args(args.weights)}))
    image = Image.open(synthetic_object(args.out / "bench_object.png", 0))
    rows: list[dict[str, Any]] = []

    def compiles(options: tuple[str, ...]) -> bool:
        return any(o.startswith("compile") for o in options)

    if "load" in parts:
        load_rows(files, args.weights, rows)
    if {"views", "compile", "sampler"} & set(parts):
        views = Views(files, image, args.steps, rows)
        if "views" in parts:
            views.math_attention()
            for options in VIEW_OPTIONS:
                if not (args.no_compile and compiles(options)):
                    views.option(options)
        if "compile" in parts and not args.no_compile:
            for options in COMPILE_OPTIONS:
                views.option(options)
        if "sampler" in parts:
            views.sampler()
        views.backend.unload(["views"])
    if "mesh" in parts:
        mesh_rows(files, image, rows, compile_lrm=not args.no_compile)

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    text = table(
        f"Compute options on {device} ({files.label}, {args.steps} steps)",
        ["what", "seconds", "speedup vs baseline", "first call s (compile)", "output difference (views: max abs on [0,1] pixels)"],
        [[r["what"], r["seconds"], r["speedup"], r["first_call_s"], r["difference"]] for r in rows],
    )
    if torch.cuda.is_available():
        text += f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB\n"
    print(text, flush=True)
    name = "compute" if parts == list(DEFAULT_PARTS) else "compute-" + "-".join(parts)
    write_results(args.out, name, {"rows": rows, "steps": args.steps, "parts": parts}, rows)
    (args.out / f"{name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
