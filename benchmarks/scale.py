"""Throughput of many workers: the WorkerPool (N GPUs, two workers on one GPU, split mode) and host.scale.ray.

Each configuration starts its workers, loads the models, makes one warm-up object per worker (not counted),
then maps OBJECTS objects and times the map: throughput = objects / wall seconds. Scaling efficiency is
throughput(N) / (N x throughput(1 worker on 1 GPU)). Results are merged into OUT/NAME.json after every
configuration, so a run cut short keeps what it finished and later runs add the rest.

    python -m benchmarks.scale --weights DIR --configs 1gpu,2w-1gpu,split-1gpu --objects 8 --out DIR --name pool
    python -m benchmarks.scale --mock step_delay=0.01 --device cpu ...   (a smoke test with the mock, no GPU)

Configurations: ``Ngpu`` (one worker per GPU on N GPUs), ``2w-1gpu`` (two workers on GPU 0), ``split-1gpu``
(views worker and mesh worker both on GPU 0), ``split-2gpu`` (views on GPU 0, meshes on GPU 1), ``ray-N``
(host.scale.ray with N one-GPU actors on a local Ray cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import synthetic_object, table, write_results
from .sessions import official_worker_keywords

CONFIG_PATTERN = re.compile(r"^(\d+gpu|2w-1gpu|split-1gpu|split-2gpu|ray-\d+)$")


def gpus_needed(config: str) -> int:
    if config.endswith("gpu") and config[0].isdigit() and not config.startswith("2w"):
        return int(config[:-3])
    if config.startswith("ray-"):
        return int(config[4:])
    return 2 if config == "split-2gpu" else 1


def pool_arguments(config: str, device: Callable[[int], str]) -> dict[str, Any]:
    """WorkerPool keywords for a configuration; ``device(i)`` names GPU i (``cpu`` in a smoke test)."""
    if config == "2w-1gpu":
        return {"devices": [device(0), device(0)]}
    if config == "split-1gpu":
        return {"split": {"views": device(0), "mesh": device(0)}}
    if config == "split-2gpu":
        return {"split": {"views": device(0), "mesh": device(1)}}
    return {"devices": [device(i) for i in range(gpus_needed(config))]}


def worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The synthetic inputs are drawn prepared (an object centred on the square): the workers are measured, so
    the host sends them as they are (``prepare=False``), as it did when the recorded numbers were taken."""
    if args.mock is not None:
        return {"backend": "mock", "worker_args": ["--mock", args.mock], "startup_timeout": 120, "prepare": False}
    return {"startup_timeout": 600, "prepare": False, **official_worker_keywords(args.weights)}


def run_pool(config: str, images: list[Path], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from host import WorkerPool

    device = (lambda i: "cpu") if args.device == "cpu" else (lambda i: f"cuda:{i}")
    began = time.perf_counter()
    pool = WorkerPool(args.worker_python, **pool_arguments(config, device), **worker_options(args))
    with pool:
        started = time.perf_counter()
        pool.load()
        loaded = time.perf_counter()
        warmup = list(
            pool.map(
                images[: pool.size],
                workdir / "warmup",
                num_inference_steps=args.steps,
                save_grids=False,
                overwrite=True,
            )
        )
        cpu0, t0 = time.process_time(), time.perf_counter()
        outcomes = list(
            pool.map(images, workdir / config, num_inference_steps=args.steps, save_grids=False, overwrite=True)
        )
        wall = time.perf_counter() - t0
        host_cpu = time.process_time() - cpu0
        status = pool.status()
    failed = [o.error for o in [*warmup, *outcomes] if not o.ok]
    if failed:
        raise RuntimeError(f"{config}: {len(failed)} object(s) failed: {failed[0]}")
    return {
        "workers": pool.size,
        "objects": len(outcomes),
        "wall_s": wall,
        "objects_per_min": 60.0 * len(outcomes) / wall,
        "start_s": started - began,
        "load_s": loaded - started,
        "host_cpu_s": host_cpu,
        "per_worker_requests": [s.requests_done for s in status],
        "retries": sum(o.attempts - 1 for o in outcomes),
        "peak_bytes": [s.worker.memory.peak_bytes if s.worker and s.worker.memory else None for s in status],
    }


def run_ray(config: str, images: list[Path], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import ray

    from host.scale.ray import map_images, start_actors, stop_actors

    count = gpus_needed(config)
    num_gpus = 0 if args.device == "cpu" else 1
    if not ray.is_initialized():
        # NCCL/NVLink multicast settings of this machine travel with the environment (the pool uses no NCCL).
        keep = {
            k: v
            for k, v in os.environ.items()
            if k.startswith("NCCL_") or k in ("PYTHONPATH", "INSTANTMESH_RPC_PYTHON")
        }
        ray.init(
            num_cpus=max(2, count + 1), include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": keep}
        )
    began = time.perf_counter()
    actors = start_actors(count, python=args.worker_python, num_gpus=num_gpus, **worker_options(args))
    try:
        common = {
            "actors": actors,
            "num_inference_steps": args.steps,
            "save_grids": False,
            "overwrite": True,
            "prepare": False,
        }
        map_images(images[:count], workdir / "ray-warmup", **common)  # loads the models, one warm-up object each
        warm = time.perf_counter()
        cpu0, t0 = time.process_time(), time.perf_counter()
        report = map_images(images, workdir / config, load=False, **common)
        wall = time.perf_counter() - t0
        host_cpu = time.process_time() - cpu0
    finally:
        stop_actors(actors)
    if report.failures:
        raise RuntimeError(f"{config}: {len(report.failures)} object(s) failed: {report.failures[0].error}")
    return {
        "workers": count,
        "objects": len(report.outcomes),
        "wall_s": wall,
        "objects_per_min": 60.0 * len(report.outcomes) / wall,
        "start_load_warmup_s": warm - began,
        "host_cpu_s": host_cpu,
        "actors": report.actors,
    }


def efficiency(results: dict[str, Any]) -> dict[str, float]:
    base = results.get("1gpu")
    if not base:
        return {}
    return {name: r["objects_per_min"] / (gpus_needed(name) * base["objects_per_min"]) for name, r in results.items()}


def report(results: dict[str, Any], meta: dict[str, Any]) -> str:
    eff = efficiency(results)
    rows = [
        (
            name,
            gpus_needed(name),
            r["workers"],
            r["objects"],
            r["wall_s"],
            r["objects_per_min"],
            eff.get(name, float("nan")),
        )
        for name, r in results.items()
    ]
    title = f"{meta['name']}: objects per minute ({meta['steps']} steps; {meta['weights']})"
    return table(title, ["config", "GPUs", "workers", "objects", "wall s", "objects/min", "efficiency"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="folder written by benchmarks.make_weights")
    parser.add_argument("--mock", metavar="OPTS", help="use the mock backend instead (smoke test)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--worker-python", default=sys.executable)
    parser.add_argument("--configs", default="1gpu,2w-1gpu,split-1gpu")
    parser.add_argument("--objects", type=int, default=8, help="objects per GPU of the configuration (default 8)")
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="pool")
    args = parser.parse_args(argv)
    if (args.weights is None) == (args.mock is None):
        parser.error("give --weights or --mock")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for config in configs:
        if not CONFIG_PATTERN.match(config):
            parser.error(f"unknown configuration {config!r}")
    path = args.out / f"{args.name}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    results: dict[str, Any] = saved.get("results", {})
    weights = (
        "mock backend (smoke test)"
        if args.mock
        else ("TINY preset (smoke test)" if (args.weights / "lrm-config.yaml").exists() else "full-size random weights")
    )
    meta = {"name": args.name, "steps": args.steps, "weights": weights, "device": args.device}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        for config in configs:
            count = args.objects * gpus_needed(config)
            images = [synthetic_object(workdir / "in" / f"object{i}.png", i) for i in range(count)]
            runner = run_ray if config.startswith("ray-") else run_pool
            print(f"{config}: {count} objects ...", flush=True)
            results[config] = runner(config, images, args, workdir)
            print(f"{config}: {results[config]['objects_per_min']:.2f} objects/min", flush=True)
            write_results(args.out, args.name, {**meta, "results": results, "efficiency": efficiency(results)})
    text = report(results, meta)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
