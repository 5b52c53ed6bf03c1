"""Objects per minute through one worker on one GPU, by ``--max-batch``: dynamic batching plus the pipeline.

For each max batch N (and each ``--mesh-lanes`` setting: the worker's mesh lane on, off), a fresh worker
starts (load and compilation counted apart), makes N warm-up objects
(not counted), then ``InstantMeshWorker.map`` runs OBJECTS objects; throughput = objects / wall seconds of
the map. Also per object: host latency (views request sent -> mesh written) and the worker's timings; GPU
utilisation sampled by nvidia-smi during the map; the worker's peak GPU memory; and, for the first and last
object of a batch, the max difference (0..255) between its views in the batch and its views made alone by
the same worker. Results merge into OUT/throughput.json after every configuration.

    python -m benchmarks.throughput --weights DIR --batches 1,2,4,8 --mesh-lanes on,off --objects 16 --out benchmarks/results/gpu-h200
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .common import synthetic_object, table, write_results
from .fast_path import MATMUL_PEAK_TFLOPS
from .sessions import official_worker_keywords

SAMPLE_MS = 200


class GpuSampler:
    """nvidia-smi's utilisation.gpu every SAMPLE_MS while running (nothing where there is no nvidia-smi)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        try:
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    f"-lms={SAMPLE_MS}",
                    "-i",
                    "0",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def _grid(path: str) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.int16)


def config_key(max_batch: int, mesh_lane: str) -> str:
    return f"{max_batch}/lane-{mesh_lane}"


def run_config(
    max_batch: int, mesh_lane: str, images: list[Path], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    from host import InstantMeshWorker

    options = official_worker_keywords(args.weights)
    began = time.perf_counter()
    with InstantMeshWorker(  # the synthetic inputs are drawn prepared: the worker is measured, not the host
        args.worker_python,
        max_batch=max_batch,
        mesh_lane=mesh_lane,
        device=args.device,
        startup_timeout=900,
        prepare=False,
        **options,
    ) as worker:
        assert worker.client.status().mesh_lane == (mesh_lane == "on")
        started = time.perf_counter()
        loaded = worker.load()
        load_s = time.perf_counter() - started
        common = {"num_inference_steps": args.steps, "format": args.format, "overwrite": True}
        warmup = list(worker.map(images[:max_batch], workdir / f"warmup-{max_batch}", **common))
        with GpuSampler() as gpu:
            t0 = time.perf_counter()
            outcomes = list(worker.map(images, workdir / f"batch-{max_batch}", **common))
            wall = time.perf_counter() - t0
        failed = [o.error for o in [*warmup, *outcomes] if not o.ok]
        if failed:
            raise RuntimeError(f"max batch {max_batch}: {len(failed)} object(s) failed: {failed[0]}")
        diffs = []
        for index in sorted({0, min(max_batch, len(images)) - 1}):
            alone = worker.generate_views(
                images[index],
                num_inference_steps=args.steps,
                save_grid=workdir / f"alone-{max_batch}-{index}.png",
                overwrite=True,
            )
            batched = outcomes[index].grid_path
            assert alone.timings["batch_size"] == 1 and batched is not None
            diffs.append(int(abs(_grid(batched) - _grid(alone.grid_path or "")).max()))
        memory = worker.status().memory
    meshes = [o.mesh for o in outcomes if o.mesh is not None]
    per_object = {
        "latency_s": [o.latency_s for o in outcomes],
        "diffusion_s": [o.views_timings.get("diffusion_s") for o in outcomes],
        "batch_size": [o.views_timings.get("batch_size") for o in outcomes],
        "planes_s": [m.timings.get("planes_s") for m in meshes],
        "mesh_s": [m.timings.get("mesh_s") for m in meshes],
        "export_s": [m.timings.get("export_s") for m in meshes],
        "vertices": [m.num_vertices for m in meshes],
    }
    return {
        "max_batch": max_batch,
        "mesh_lane": mesh_lane,
        "objects": len(outcomes),
        "wall_s": wall,
        "objects_per_min": 60.0 * len(outcomes) / wall,
        "latency_median_s": statistics.median(o.latency_s or 0.0 for o in outcomes),
        "start_s": started - began,
        "load_s": load_s,
        "load_phases": loaded.load_seconds,
        "gpu_util_mean": gpu.mean,
        "peak_gpu_gib": memory.peak_bytes / 2**30 if memory else None,
        "views_max_abs_diff_batched_vs_alone": max(diffs),
        "per_object": per_object,
    }


def limits(result: dict[str, Any]) -> dict[str, float]:
    """Seconds per object of each resource, from the worker's own timings (the largest bounds throughput)."""
    per = result["per_object"]
    batches = [d / b for d, b in zip(per["diffusion_s"], per["batch_size"], strict=True) if d and b]
    mean = statistics.fmean
    return {
        "views_gpu_s": mean(batches),
        "mesh_gpu_s": mean(per["planes_s"]) + mean(per["mesh_s"]),
        "export_cpu_s": mean(per["export_s"]),
        "wall_s": result["wall_s"] / result["objects"],
    }


def flops_per_object(out: Path, steps: int) -> float | None:
    """The fast-path benchmark's FLOP count on this machine (same pipeline, same steps), if there is one."""
    path = out / "fast_path.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return float(saved["flops_per_object"]) if saved.get("steps") == steps and "flops_per_object" in saved else None


def report(results: dict[str, Any], meta: dict[str, Any], flops: float | None) -> str:
    rows = []
    for r in sorted(results.values(), key=lambda r: (r["max_batch"], r.get("mesh_lane", "off"))):
        lim = limits(r)
        views_per_s = 1.0 / lim["views_gpu_s"]
        mfu = f"{flops * views_per_s / (MATMUL_PEAK_TFLOPS * 1e12):.1%}" if flops else "-"
        util = f"{r['gpu_util_mean']:.0f}%" if r["gpu_util_mean"] is not None else "-"
        peak = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        rows.append(
            (
                r["max_batch"],
                r.get("mesh_lane", "off"),
                r["objects"],
                r["objects_per_min"],
                r["latency_median_s"],
                lim["views_gpu_s"],
                lim["mesh_gpu_s"],
                lim["export_cpu_s"],
                util,
                mfu,
                peak,
                r["views_max_abs_diff_batched_vs_alone"],
                r["load_s"],
            )
        )
    title = f"Throughput of one worker on {meta['gpu']} ({meta['steps']} steps, {meta['format']}; {meta['weights']})"
    headers = [
        "max batch",
        "mesh lane",
        "objects",
        "objects/min",
        "median latency s",
        "views s/object",
        "mesh GPU s/object",
        "export s/object",
        "GPU util",
        "views MFU",
        "peak GPU GiB",
        "max diff vs alone",
        "load s",
    ]
    return table(title, headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="folder written by benchmarks.make_weights")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument(
        "--mesh-lanes", default="on", help="comma list of the worker's --mesh-lane settings to measure (on, off)"
    )
    parser.add_argument("--objects", type=int, default=16)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--format", default="obj", choices=["obj", "ply", "glb"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--worker-python", default=sys.executable)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    path = args.out / "throughput.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    results: dict[str, Any] = saved.get("results", {})
    import torch

    tiny = (args.weights / "lrm-config.yaml").exists()
    meta = {
        "steps": args.steps,
        "format": args.format,
        "weights": "TINY preset (smoke test)" if tiny else "full-size random weights",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU",
    }
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        workdir = Path(tmp)
        images = [synthetic_object(workdir / "in" / f"object{i}.png", i) for i in range(args.objects)]
        for max_batch in batches:
            for lane in filter(None, args.mesh_lanes.split(",")):
                key = config_key(max_batch, lane)
                print(f"max batch {max_batch}, mesh lane {lane}: {args.objects} objects ...", flush=True)
                results[key] = run_config(max_batch, lane, images, args, workdir)
                print(f"{key}: {results[key]['objects_per_min']:.2f} objects/min", flush=True)
                write_results(args.out, "throughput", {**meta, "results": results})
    text = report(results, meta, flops_per_object(args.out, args.steps))
    (args.out / "throughput.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
