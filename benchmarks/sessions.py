"""Sessions of N objects, three ways, side by side in one run (GPU):

(a) subprocess per object: a fresh Python process per object that imports and loads everything
    (``benchmarks.one_object``), exactly the contract of a pipeline that shells out per object;
(b) the warm worker through the host API (``InstantMeshWorker``), one process for the whole session;
(c) the same backend functions called in-process, no worker (the lower limit).

A session of N objects is the first N objects of one run of ``--objects`` objects, so N = 1, 3, 10 come
from one pass per mode. Writes sessions.json/.csv/.md and a PNG plot under --out.

``python -m benchmarks.sessions --weights DIR [--objects 10] [--steps 75] [--out DIR]``
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
from typing import TYPE_CHECKING, Any

import msgspec

from .common import summarize, synthetic_object, table, write_results

if TYPE_CHECKING:
    from rpcworker.options import WorkerOptions

SESSION_SIZES = (1, 3, 10)
MODES = {"a": "(a) subprocess per object", "b": "(b) warm worker (host API)", "c": "(c) in-process, no worker"}


def weight_args(weights: Path) -> dict[str, str]:
    args = {
        "zero123plus": str(weights / "zero123plus-v1.2"),
        "unet": str(weights / "diffusion_pytorch_model.bin"),
        "lrm": str(weights / "instant_mesh_large.ckpt"),
    }
    if (weights / "lrm-config.yaml").exists():  # a smoke-test folder with the tiny sizes
        args.update(config=str(weights / "lrm-config.yaml"), view_size="32")
    return args


def official_options(weights: Path) -> WorkerOptions:
    """The worker's options for the official preset on a weights folder: what these flags would parse to."""
    from rpcworker.options import WorkerOptions

    return msgspec.convert({"preset": "official", **weight_args(weights)}, WorkerOptions, strict=False)


def worker_flags(args: dict[str, str]) -> list[str]:
    return [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", v)]


def official_worker_keywords(weights: Path) -> dict[str, Any]:
    """InstantMeshWorker keywords for a make_weights folder: the weight paths as keywords, the rest as worker flags."""
    w = weight_args(weights)
    given = {k: w.pop(k) for k in ("zero123plus", "unet", "lrm")}
    return {"preset": "official", "worker_args": worker_flags(w), **given}


def warm_page_cache(weights: Path) -> None:
    """Reads every weight file once so that no mode pays the first cold read from disk."""
    for path in weights.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(64 * 1024 * 1024):
                    pass


def subprocess_per_object(
    images: list[Path],
    weights: Path,
    steps: int,
    workdir: Path,
    done_so_far: Callable[[dict[str, Any]], None] = lambda _: None,
) -> dict[str, Any]:
    """Calls ``done_so_far`` after every object, so that a run stopped by a time limit keeps what it measured."""
    w = weight_args(weights)
    per_object: list[float] = []
    splits: list[dict[str, float]] = []
    for i, image in enumerate(images):
        start = time.time()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.one_object",
                str(image),
                str(workdir / f"a{i}.obj"),
                "--steps",
                str(steps),
                *worker_flags(w),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        end = time.time()
        if out.returncode != 0:
            raise RuntimeError(f"one_object failed:\n{out.stderr[-3000:]}")
        s = json.loads(out.stdout.strip().splitlines()[-1])
        per_object.append(end - start)
        splits.append(
            {
                "process_start_s": s["started"] - start,
                "imports_s": s["imported"] - s["started"],
                "cuda_init_s": s["cuda_ready"] - s["imported"],
                "load_views_s": s["views_loaded"] - s["cuda_ready"],
                "load_mesh_s": s["mesh_loaded"] - s["views_loaded"],
                "views_s": s["views_done"] - s["mesh_loaded"],
                "mesh_s": s["mesh_done"] - s["views_done"],
                "export_s": s["exported"] - s["mesh_done"],
                "exit_s": end - s["exported"],
                "peak_gpu_bytes": s["peak_gpu_bytes"],
            }
        )
        done_so_far({"per_object_s": per_object, "splits": splits})
    return {"per_object_s": per_object, "splits": splits}


def warm_worker(images: list[Path], weights: Path, steps: int, workdir: Path) -> dict[str, Any]:
    from host import InstantMeshWorker

    start = time.perf_counter()
    # The inputs go as they are, as in_process feeds them: the two differ by the worker alone.
    worker = InstantMeshWorker(sys.executable, max_batch=1, prepare=False, **official_worker_keywords(weights))
    info = worker.client.start()
    started = time.perf_counter()
    loaded = worker.load()
    after_load = time.perf_counter()
    per_object, model_s = [], []
    try:
        for i, image in enumerate(images):
            t = time.perf_counter()
            views = worker.generate_views(image, seed=42, num_inference_steps=steps)
            mesh = worker.reconstruct(views, workdir / f"b{i}.obj")
            per_object.append(time.perf_counter() - t)
            model_s.append(views.timings["total_s"] + mesh.timings["total_s"])
        status = worker.status()
    finally:
        worker.close()
    per_object[0] += after_load - start
    return {
        "per_object_s": per_object,
        "worker_compute_s": model_s,
        "cold": {
            "spawn_imports_handshake_s": started - start,
            **{f"load_{k}_s": v for k, v in loaded.load_seconds.items()},
        },
        "peak_gpu_bytes": status.memory.peak_bytes if status.memory else None,
        "worker": {"python": info.python, "torch": info.torch, "device": info.device},
    }


def in_process(images: list[Path], weights: Path, steps: int, workdir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    import torch

    from instantmesh.export import write_mesh
    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files
    from rpcworker.images import load_input_image
    from rpcworker.outputs import atomic_output
    from rpcworker.wire.messages import ImagePath

    imported = time.perf_counter()
    files = resolve_model_files(official_options(weights))
    backend = InstantMeshBackend(files, max_batch=1)
    ctx = SilentContext()
    load_s = backend.load(["views", "mesh"], ctx)
    after_load = time.perf_counter()
    per_object = []
    for i, image in enumerate(images):
        t = time.perf_counter()
        views = backend.generate_views(load_input_image(ImagePath(str(image))), 42, steps, 4.0, ctx)
        mesh = backend.reconstruct(views.views, False, ctx)
        with atomic_output(str(workdir / f"c{i}.obj")) as tmp:
            write_mesh(tmp, "obj", mesh.vertices, mesh.faces, mesh.vertex_colors)
        per_object.append(time.perf_counter() - t)
    per_object[0] += after_load - start
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    backend.unload(["views", "mesh"])
    return {
        "per_object_s": per_object,
        "cold": {"imports_s": imported - start, **{f"load_{k}_s": v for k, v in load_s.items()}},
        "peak_gpu_bytes": peak,
    }


def is_smoke(weights: Path) -> bool:
    return (weights / "lrm-config.yaml").exists()


def report(results: dict[str, Any], steps: int, smoke: bool = False) -> str:
    """Tables for whichever modes are present (runs of single modes can be merged with --merge)."""
    modes = {k: v for k, v in MODES.items() if k in results}
    rows = []
    for n in SESSION_SIZES:
        for key, label in modes.items():
            times = results[key]["per_object_s"][:n]
            if len(times) == n:
                steady = times[1:] or times
                rows.append([n, label, sum(times), times[0], summarize(steady)["median"]])
    text = table(
        f"Sessions of N objects ({steps} steps, "
        + (
            "the TINY preset: a smoke run, not a measurement)"
            if smoke
            else "full-size architectures, random weights in the official formats)"
        ),
        ["N", "mode", "total s", "first object s", "median later object s"],
        rows,
    )
    ratios = []
    if "b" in results and "c" in results:
        b, c = results["b"]["per_object_s"], results["c"]["per_object_s"]
        ratios.append(
            [
                "warm worker / in-process, per warm object (median of objects 2..N)",
                summarize(b[1:] or b)["median"] / summarize(c[1:] or c)["median"],
            ]
        )
    if "b" in results and "worker_compute_s" in results["b"]:
        b, inside = results["b"]["per_object_s"], results["b"]["worker_compute_s"]
        outside = [b[i] - inside[i] for i in range(1, len(b))] or [b[0] - inside[0]]
        share = [o / t for o, t in zip(outside, b[1:] or b, strict=False)]
        ratios.append(
            [
                "warm worker: per-object time outside the worker's methods (IPC, host), median ms",
                summarize(outside)["median"] * 1e3,
            ]
        )
        ratios.append(
            ["warm worker: that overhead as a share of the object's time (median)", summarize(share)["median"]]
        )
    if "a" in results and "b" in results:
        a, b = results["a"]["per_object_s"], results["b"]["per_object_s"]
        n = min(len(a), len(b))
        ratios.append([f"subprocess per object / warm worker, session total for N={n}", sum(a[:n]) / sum(b[:n])])
    if ratios:
        text += "\n" + table("Headline ratios", ["ratio", "value"], ratios)
    if "a" in results:
        split = results["a"]["splits"]
        keys = [k for k in split[0] if k != "peak_gpu_bytes"]
        text += "\n" + table(
            "Where a subprocess-per-object run spends its time (median over objects, seconds)",
            keys,
            [[summarize([s[k] for s in split])["median"] for k in keys]],
        )
    if "b" in results:
        cold = results["b"]["cold"]
        text += "\n" + table("Warm worker cold start (once per session, seconds)", list(cold), [list(cold.values())])
    peaks = [[label, _peak(results[key]) / 2**30] for key, label in modes.items()]
    text += "\n" + table("Peak GPU memory (GiB)", ["mode", "peak"], peaks)
    return text


def _peak(result: dict[str, Any]) -> float:
    if "splits" in result:
        return max(s["peak_gpu_bytes"] for s in result["splits"])
    return result.get("peak_gpu_bytes") or 0


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in MODES.items():
        if key not in results:
            continue
        times = results[key]["per_object_s"]
        cumulative = [sum(times[: i + 1]) for i in range(len(times))]
        ax.plot(range(1, len(times) + 1), cumulative, marker="o", label=label)
    ax.set_xlabel("objects processed")
    ax.set_ylabel("cumulative seconds")
    ax.set_title("Session time by number of objects")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="folder written by benchmarks.make_weights")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="render one report from earlier sessions.json files instead of running"
    )
    parser.add_argument("--objects", type=int, default=max(SESSION_SIZES))
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--modes", default="cba", help="which modes to run, in this order")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sessions"))
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    smoke = False
    if args.merge:
        for path in args.merge:
            loaded = json.loads(path.read_text())
            results.update(loaded["results"])
            args.steps = loaded["steps"]
            smoke = smoke or loaded.get("smoke", False)
    else:
        if args.weights is None:
            parser.error("--weights is required unless --merge is given")
        smoke = is_smoke(args.weights)
        os.environ.setdefault("INSTANTMESH_RPC_PYTHON", sys.executable)
        warm_page_cache(args.weights)
        runners = {"a": subprocess_per_object, "b": warm_worker, "c": in_process}
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            images = [synthetic_object(workdir / f"object{i}.png", i) for i in range(args.objects)]
            for key in args.modes:
                t = time.perf_counter()

                def save(partial: dict[str, Any], key: str = key) -> None:
                    write_results(
                        args.out,
                        "sessions",
                        {"steps": args.steps, "smoke": smoke, "results": {**results, key: partial}},
                    )

                extra = {"done_so_far": save} if key == "a" else {}
                results[key] = runners[key](images, args.weights, args.steps, workdir, **extra)
                print(
                    f"mode {key}: {time.perf_counter() - t:.1f} s; per object {[round(x, 2) for x in results[key]['per_object_s']]}",
                    flush=True,
                )
                save(results[key])
    text = report(results, args.steps, smoke)
    print(text, flush=True)
    write_results(
        args.out,
        "sessions",
        {"steps": args.steps, "smoke": smoke, "results": results},
        [{"mode": k, "object": i + 1, "seconds": s} for k in results for i, s in enumerate(results[k]["per_object_s"])],
    )
    (args.out / "sessions.md").write_text(text)
    plot(results, args.out / "sessions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
