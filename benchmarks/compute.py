"""Faster compute on the GPU: each option against eager fp16 in the same run, with its output difference.

For the views (Zero123++, the dominant cost): math attention (no SDPA), SDPA (the default), channels_last,
torch.compile of the UNet (compile time reported apart), and a deterministic Euler sampler with fewer steps
(a documented trade-off: a different image, so its difference is reported, not required to be small).
For the mesh (LRM): torch.compile, and bf16 autocast. For start-up: load times, and safetensors vs
pickle-free torch.load for the LRM checkpoint.

``python -m benchmarks.compute --weights DIR [--steps 75] [--out DIR]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from instantmesh.lrm.checkpoint import read_lrm_state_dict, save_lrm_checkpoint
from rpcworker.backends.base import SilentContext
from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files

from .common import synthetic_object, table, write_results
from .sessions import weight_args


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def views_runner(backend: InstantMeshBackend, image: Any, steps: int) -> Callable[[], np.ndarray]:
    ctx = SilentContext()

    def run() -> np.ndarray:
        generated = backend.generate_views(image, 42, steps, 4.0, ctx)
        return np.asarray(generated.grid, dtype=np.float32) / 255.0

    return run


def set_attention(pipeline: Any, processor: Any) -> None:
    from instantmesh.zero123plus.reference_attention import install_reference_attention

    pipeline.unet.set_attn_processor(processor)
    pipeline.reference_bank = install_reference_attention(pipeline.unet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compute"))
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (for a quick CPU smoke run)")
    args = parser.parse_args(argv)
    from diffusers import EulerDiscreteScheduler
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    from PIL import Image

    w = weight_args(args.weights)
    namespace = argparse.Namespace(**{"preset": "official", "config": None, "view_size": None, **w})
    files = resolve_model_files(namespace)
    ctx = SilentContext()
    rows: list[dict[str, Any]] = []

    # ---- start-up: loading. (Loading the two models in parallel threads is not measured: diffusers loads
    # through accelerate's init_empty_weights, which patches nn.Module for every thread, so a model built
    # at the same time in another thread comes out on the meta device.)
    backend = InstantMeshBackend(files)
    seq = backend.load(["views", "mesh"], ctx)
    rows.append({"what": "load views (Zero123++ + white-bg UNet)", "seconds": seq["views"], "speedup": 1.0, "difference": "-"})
    rows.append({"what": "load mesh (LRM .ckpt + FlexiCubes grid)", "seconds": seq["mesh"], "speedup": 1.0, "difference": "-"})

    ckpt = Path(w["lrm"])
    st = args.weights / "instant_mesh_large.safetensors"
    save_lrm_checkpoint(read_lrm_state_dict(ckpt), st)
    t_ckpt, _ = timed(lambda: read_lrm_state_dict(ckpt))
    t_st, _ = timed(lambda: read_lrm_state_dict(st))
    rows.append({"what": "read LRM .ckpt (torch.load, weights_only)", "seconds": t_ckpt, "speedup": 1.0, "difference": "-"})
    rows.append({"what": "read LRM .safetensors", "seconds": t_st, "speedup": t_ckpt / t_st, "difference": "-"})

    # ---- views
    image = Image.open(synthetic_object(args.weights / "bench_object.png", 0))
    run = views_runner(backend, image, args.steps)
    views_runner(backend, image, 3)()  # warm-up: kernels, allocator
    base_t, base = timed(run)
    rows.append({"what": f"views: eager fp16, SDPA attention (default), {args.steps} steps", "seconds": base_t, "speedup": 1.0, "difference": 0.0})
    pipeline = backend._pipeline

    set_attention(pipeline, AttnProcessor())
    t, out = timed(run)
    rows.append({"what": "views: math attention (no SDPA)", "seconds": t, "speedup": base_t / t, "difference": float(np.abs(out - base).max())})
    set_attention(pipeline, AttnProcessor2_0())

    pipeline.unet.to(memory_format=torch.channels_last)
    pipeline.vae.to(memory_format=torch.channels_last)
    views_runner(backend, image, 2)()
    t, out = timed(run)
    rows.append({"what": "views: channels_last UNet + VAE", "seconds": t, "speedup": base_t / t, "difference": float(np.abs(out - base).max())})

    if not args.no_compile:
        compile_t, _ = timed(lambda: (pipeline.unet.compile(), views_runner(backend, image, 2)()))
        t, out = timed(run)
        rows.append({"what": f"views: torch.compile UNet + channels_last (compile {compile_t:.0f} s, once per worker)", "seconds": t, "speedup": base_t / t, "difference": float(np.abs(out - base).max())})

    euler = pipeline.scheduler
    # Deterministic Euler with Karras sigmas keeps the sigma parametrisation the pipeline's reference noising uses.
    pipeline.scheduler = EulerDiscreteScheduler.from_config(euler.config, use_karras_sigmas=True)
    fewer = max(2, args.steps * 2 // 5)
    t, out = timed(views_runner(backend, image, fewer))
    rows.append({"what": f"views: Euler (Karras sigmas) {fewer} steps, with the options above (trade-off: another sampler, another image)", "seconds": t, "speedup": base_t / t, "difference": float(np.abs(out - base).max())})
    pipeline.scheduler = euler

    # ---- mesh
    generated = backend.generate_views(image, 42, 2, 4.0, ctx)
    lrm = backend._lrm

    def mesh() -> Any:
        return backend.reconstruct(generated.views, False, ctx)

    mesh()
    t_lrm, m0 = timed(mesh)
    rows.append({"what": "mesh: eager fp32 LRM + FlexiCubes (grid 128)", "seconds": t_lrm, "speedup": 1.0, "difference": f"{len(m0.vertices)} verts"})
    with torch.autocast(backend.device.type, dtype=torch.bfloat16):
        mesh()
        t, m1 = timed(mesh)
    rows.append({"what": "mesh: bf16 autocast", "seconds": t, "speedup": t_lrm / t, "difference": f"{len(m1.vertices)} verts, max |Δv| n/a" if len(m1.vertices) != len(m0.vertices) else f"max |Δv| {float(np.abs(m1.vertices - m0.vertices).max()):.2e}"})
    if not args.no_compile:
        lrm.encoder.compile()
        lrm.transformer.compile()
        compile_lrm, _ = timed(mesh)
        t, m2 = timed(mesh)
        same = len(m2.vertices) == len(m0.vertices)
        rows.append({"what": f"mesh: torch.compile encoder + transformer (compile {compile_lrm:.0f} s)", "seconds": t, "speedup": t_lrm / t,
                     "difference": f"max |Δv| {float(np.abs(m2.vertices - m0.vertices).max()):.2e}" if same else f"{len(m2.vertices)} verts"})

    text = table(
        f"Compute options on {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'} (random weights, {args.steps} steps)",
        ["what", "seconds", "speedup vs baseline", "output difference (views: max abs on [0,1] pixels)"],
        [[r["what"], r["seconds"], r["speedup"], r["difference"]] for r in rows],
    )
    if torch.cuda.is_available():
        text += f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB\n"
    print(text, flush=True)
    write_results(args.out, "compute", {"rows": rows, "steps": args.steps}, rows)
    (args.out / "compute.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
