"""The fast path on one GPU, from one run: eager vs the default views, cold starts, export, memory.

``python -m benchmarks.fast_path --weights DIR [--steps 75] [--out benchmarks/results/gpu-h200]``
(DIR from ``benchmarks.make_weights``; ``--tiny`` folders smoke-test it on a CPU). Writes fast_path.json/.md.

- Two fresh worker-like processes in a row, sharing one empty cache folder: the first start (pickle to
  safetensors conversion, compilation, the views bundle written) and the second (from the views bundle: no
  diffusers or transformers import), each timed per phase from
  spawn, each then making one object (views with the default options, mesh) and reporting peak GPU memory.
- In this process: the eager fp16 baseline on the same weights, seed and input (no speed option), its
  difference to the default's views (max abs on 0..255 pixels), and the FLOPs per object for the MFU.
- Export of the random-weights mesh and of the synthetic meshes of `benchmarks.export`, ours vs trimesh
  (fastest of 3 runs of ours, each to a new file).

Environment: ``FAST_PATH_EXTRA_STARTS="NAME:VAR=VALUE,...;..."`` adds starts from the same cache after the second
(``profiled:FAST_PATH_PROFILE=1`` writes profile_load.txt, the load's CPU time by torch op);
``FAST_PATH_STARTS_ONLY=1`` stops after the starts; ``FAST_PATH_CACHE`` keeps the cache folder;
``FAST_PATH_STACKS=N`` prints the child's Python stacks every N seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPAWNED_AT = float(os.environ.get("FAST_PATH_SPAWNED_AT") or time.time())
"""When the parent spawned this process (its clock, passed down), so that ready_s includes the interpreter's start."""
HEAVY_IMPORTS = {"diffusers", "transformers"}
MAX_VIEWS_DIFF = 2
"""The most the default path's views may differ from eager's (0..255); more fails the run (exit status 1)."""
"""Libraries a start from the views bundle does without (`imported_at_load` lists those a start imported)."""
COMPILERS = {"torch._dynamo", "torch._inductor"}
"""Nor does it need torch's compilers (imported, they cost seconds)."""
MATMUL_PEAK_TFLOPS = 704.0
"""The MFU denominator: an fp16 8192^3 matmul's TFLOP/s on the H200 (see docs/benchmarks.md, 'One object on the
fast path')."""


def child(weights: Path, steps: int, out: Path) -> dict[str, Any]:
    """One worker start and one object, timed by phase (runs in its own process)."""
    phases: dict[str, float] = {}
    from instantmesh.bytecode_cache import use_bytecode_cache

    use_bytecode_cache()  # as the worker's entry does, before torch is imported
    t = time.perf_counter()
    stacks_every = float(os.environ.get("FAST_PATH_STACKS") or 0)
    if stacks_every:  # where a slow start goes: every thread's Python stack every N seconds, on stderr
        from .common import dump_stacks_every

        stop_dumps = dump_stacks_every(stacks_every)
    import numpy as np
    import torch

    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files

    from .sessions import official_options

    phases["imports_s"] = time.perf_counter() - t
    files = resolve_model_files(official_options(weights))
    backend = InstantMeshBackend(files, max_batch=1)  # one object's latency and start: one compiled batch size
    ctx = SilentContext()
    cuda = torch.cuda.is_available()
    peaks: dict[str, float] = {}

    def peak(phase: str) -> None:
        """Peak GPU memory of the phase just ended (where the ≤ 6 GiB goal is missed), then a fresh count."""
        if cuda:
            peaks[phase] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()

    if os.environ.get("FAST_PATH_PROFILE") == "1":  # where the load's CPU time goes, by torch op (a diagnostic start)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            loads = backend.load(["views", "mesh"], ctx)
        (out / "profile_load.txt").write_text(
            profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=60)
        )
    else:
        loads = backend.load(["views", "mesh"], ctx)
    if stacks_every:
        stop_dumps.set()
    imported = sorted({name.split(".")[0] for name in sys.modules} & HEAVY_IMPORTS | (COMPILERS & set(sys.modules)))
    peak("load")
    phases.update(backend.load_phases)
    phases["load_mesh_s"] = loads["mesh"]
    ready = time.time() - SPAWNED_AT
    from PIL import Image

    from .common import synthetic_object

    image = Image.open(synthetic_object(out / "bench_object.png", 0))
    times = []
    for _ in range(2):
        t = time.perf_counter()
        generated = backend.generate_views(image, 42, steps, 4.0, ctx)
        times.append(time.perf_counter() - t)
    peak("views")
    np.save(out / "views_default.npy", np.asarray(generated.grid))
    t = time.perf_counter()
    mesh = backend.reconstruct(generated.views, False, ctx)
    mesh_s = time.perf_counter() - t
    peak("mesh")
    np.savez(out / "mesh.npz", vertices=mesh.vertices, faces=mesh.faces, colors=mesh.vertex_colors)
    step = getattr(backend._pipeline.networks, "overlapped", None)  # packaged networks' step
    return {
        "ready_s": ready,
        "phases": phases,
        "views_s": min(times),
        "views_runs_s": times,
        "mesh_s": mesh_s,
        "optimizations": list(backend.optimizations),
        "step_overlapping": getattr(step, "overlapping", None),
        "imported_at_load": imported,
        "peak_gpu_gib": max(peaks.values(), default=0.0),
        "peak_by_phase_gib": peaks,
    }


def start_child(
    weights: Path, steps: int, out: Path, cache: Path, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    env = {
        **os.environ,
        "INSTANTMESH_RPC_CACHE": str(cache),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
        "FAST_PATH_SPAWNED_AT": repr(time.time()),
    }
    result = out / "child.json"
    result.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.fast_path",
        "--child",
        "--weights",
        str(weights),
        "--steps",
        str(steps),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, env=env, check=True)
    return json.loads(result.read_text())


def flops_per_object(pipeline: Any, image: Any, steps: int, view_size: int) -> float:
    """FLOPs of a whole call at 1 and 2 steps (torch.utils.flop_counter): fixed part + steps x per-step part."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for n in (1, 2):
        with FlopCounterMode(display=False) as counter:
            pipeline(
                image,
                num_inference_steps=n,
                guidance_scale=4.0,
                generator=0,
                width=2 * view_size,
                height=3 * view_size,
                output_type="latent",
            )
        counts.append(counter.get_total_flops())
    per_step = counts[1] - counts[0]
    return float(counts[0] - per_step + steps * per_step)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of ``fn()`` with the GPU's queue drained before and after, and what it returned."""
    import torch

    drain = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    drain()
    start = time.perf_counter()
    out = fn()
    drain()
    return time.perf_counter() - start, out


def eager_baseline(weights: Path, steps: int, out: Path) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files

    from .common import synthetic_object
    from .sessions import official_options

    files = resolve_model_files(official_options(weights))
    image = Image.open(synthetic_object(out / "bench_object.png", 0))
    backend = InstantMeshBackend(files, optimizations=())
    ctx = SilentContext()
    backend.load(["views"], ctx)
    backend.generate_views(image, 42, 2, 4.0, ctx)
    seconds, generated = timed(lambda: backend.generate_views(image, 42, steps, 4.0, ctx))
    eager = np.asarray(generated.grid).astype(np.int16)
    result: dict[str, Any] = {"views_eager_s": seconds}
    default = np.load(out / "views_default.npy").astype(np.int16)
    result["views_max_abs_diff"] = int(np.abs(default - eager).max())
    result["views_mean_abs_diff"] = float(np.abs(default - eager).mean())
    result["flops_per_object"] = flops_per_object(backend._pipeline, image, steps, files.view_size)
    backend._pipeline.networks.to_channels_last()  # channels_last alone, eager: does it still pay?
    backend._pipeline.use(backend._pipeline.networks)
    seconds, generated = timed(lambda: backend.generate_views(image, 42, steps, 4.0, ctx))
    result["views_eager_channels_last_s"] = seconds
    result["views_eager_channels_last_max_abs_diff"] = int(
        np.abs(np.asarray(generated.grid).astype(np.int16) - eager).max()
    )
    return result


def export_rows(out: Path) -> list[dict[str, Any]]:
    """The extracted mesh and the synthetic ones of ``benchmarks.export``, ours vs trimesh."""
    from .export import export_rows as timed_exports
    from .export import saved_mesh, synthetic_meshes

    return timed_exports({**saved_mesh(out / "mesh.npz", "random-weights mesh"), **synthetic_meshes()}, repeats=3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu-h200"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        (args.out / "child.json").write_text(json.dumps(child(args.weights, args.steps, args.out)))
        return 0
    import torch

    from .common import machine, table, write_results

    results: dict[str, Any] = {"machine": machine(), "steps": args.steps}
    import diffusers
    import transformers

    results["versions"] = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
    }
    results["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"

    def save() -> None:
        write_results(args.out, "fast_path", results)

    # FAST_PATH_CACHE: an empty folder to use (and keep) instead of a temporary one, e.g. so a later benchmark in
    # the same device call starts from these compiled kernels.
    cache = Path(os.environ.get("FAST_PATH_CACHE") or tempfile.mkdtemp(prefix="fastpath-cache-"))
    cache.mkdir(parents=True, exist_ok=True)
    if any(cache.iterdir()):
        raise SystemExit(f"FAST_PATH_CACHE {cache} is not empty: the first start would not be a first start")
    results["first_start"] = start_child(args.weights, args.steps, args.out, cache)
    save()
    results["second_start"] = start_child(args.weights, args.steps, args.out, cache)
    save()
    # FAST_PATH_EXTRA_STARTS: more starts from the same cache, each NAME:VAR=VALUE,... (e.g. a profiled one)
    for spec in filter(None, os.environ.get("FAST_PATH_EXTRA_STARTS", "").split(";")):
        name, _, assignments = spec.partition(":")
        extra = dict(item.split("=", 1) for item in assignments.split(",") if item)
        results.setdefault("extra_starts", {})[name] = {
            "env": extra,
            **start_child(args.weights, args.steps, args.out, cache, extra),
        }
        save()
    results["cold_start_s"] = results["first_start"]["ready_s"]
    results["cold_start_cached_s"] = results["second_start"]["ready_s"]
    results["views_s"] = results["second_start"]["views_s"]
    results["peak_gpu_gib"] = results["second_start"]["peak_gpu_gib"]
    if os.environ.get("FAST_PATH_STARTS_ONLY") == "1":  # an exploratory run: the starts alone
        return 0
    results.update(eager_baseline(args.weights, args.steps, args.out))
    results["mfu"] = results["flops_per_object"] / results["views_s"] / (MATMUL_PEAK_TFLOPS * 1e12)
    results["mfu_eager"] = results["flops_per_object"] / results["views_eager_s"] / (MATMUL_PEAK_TFLOPS * 1e12)
    save()
    results["export"] = export_rows(args.out)
    save()
    first, second = results["first_start"], results["second_start"]
    rows = [
        ["views, eager fp16 (no option)", results["views_eager_s"], f"MFU {results['mfu_eager']:.1%}"],
        [
            f"views, default ({','.join(second['optimizations'])})",
            results["views_s"],
            f"MFU {results['mfu']:.1%}, {results['views_eager_s'] / results['views_s']:.2f}x, max abs diff {results['views_max_abs_diff']} (0..255), "
            f"next reference pass beside the main pass: {second.get('step_overlapping')}",
        ],
        [
            "views, eager + channels_last",
            results["views_eager_channels_last_s"],
            f"{results['views_eager_s'] / results['views_eager_channels_last_s']:.2f}x, max abs diff {results['views_eager_channels_last_max_abs_diff']}",
        ],
        [
            "cold start, first (spawn -> both models warm)",
            first["ready_s"],
            ", ".join(f"{k} {v:.2f}" for k, v in first["phases"].items()),
        ],
        [
            "cold start, second (caches reused)",
            second["ready_s"],
            ", ".join(f"{k} {v:.2f}" for k, v in second["phases"].items())
            + f"; imported at load: {', '.join(second.get('imported_at_load', [])) or 'neither diffusers nor transformers'}",
        ],
        [
            "mesh (LRM + FlexiCubes)",
            second["mesh_s"],
            f"peak GPU {results['peak_gpu_gib']:.2f} GiB ("
            + ", ".join(f"{k} {v:.2f}" for k, v in second.get("peak_by_phase_gib", {}).items())
            + ")",
        ],
        *[
            [
                f"export {r['mesh']} {r['format']}",
                r["export_s"],
                f"trimesh {r['trimesh_s']:.3f} s ({r['speedup']:.1f}x); our first run {r['export_runs_s'][0]:.3f} s",
            ]
            for r in results["export"]
        ],
    ]
    v = results["versions"]
    text = table(
        f"Fast path on {results['gpu']} (torch {v['torch']}, diffusers {v['diffusers']}, {args.steps} steps)",
        ["what", "seconds", "notes"],
        rows,
    )
    print(text, flush=True)
    (args.out / "fast_path.md").write_text(text)
    if results["views_max_abs_diff"] > MAX_VIEWS_DIFF:
        print(
            f"FAIL: the fast path's views differ from eager's by {results['views_max_abs_diff']} of 255 "
            f"(at most {MAX_VIEWS_DIFF} allowed)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
