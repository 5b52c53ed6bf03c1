"""A machine's first run, from empty caches: how soon the first mesh comes, and when the views run compiled.

``python -m benchmarks.first_run --weights DIR [--out benchmarks/results/gpu-h200] [--steps 75]``
(DIR from ``benchmarks.make_weights``); ``--tiny`` on a tiny folder smoke-tests it on the CPU, without the
compile option (the numbers of compilation are then null). Writes first_run.json and prints a table.

Through the host API, as a person runs it, with the worker's defaults (``--max-batch`` 8 on CUDA):

- time_to_first_mesh_s: spawn of a worker on an empty cache to its first mesh written (views, mesh, export);
  its parts: first_load_s (spawn to both models loaded), first_load_seconds (per model, the worker's count) and
  first_object_stages (the stages the worker reports for that first object);
- time_to_compiled_s: the same spawn to the switch to compiled views (status ``compile`` ready), the worker
  kept busy with objects meanwhile; compiled_vs_eager_max_abs_diff: one object's views before and after (0..255);
- one_at_a_time_s: median seconds per object (views, mesh, export) once warm and nothing is being built (the second
  start, default options); views_s: the views of one object; one_at_a_time_stages: the medians of its parts;
  one_at_a_time_while_building_s: the same on the first start while its full batch size was still being built;
- max_batch_1_one_at_a_time_s, max_batch_1_views_s: the same on a worker started with ``--max-batch 1``;
- batched_vs_alone_max_abs_diff: two objects' views in one batch against each alone (0..255);
- cold_start_cached_s: a second worker on the same cache, spawn to both models loaded;
- objects_per_min: that worker mapping two full batches of objects; peak_gpu_gib: the most either worker held.

Each measure is written as soon as it is made, so a run stopped by the device's time limit keeps the others;
``--deadline S`` skips what would start after S seconds from the beginning.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import synthetic_object, table, write_results
from .sessions import is_smoke, official_worker_keywords, weight_args, worker_flags

RESULT_NAME = "first_run"
OBJECTS_ALONE = 3
"""Objects timed one at a time once warm (the median is reported)."""
DEFAULT_DEADLINE_S = 540.0
"""Seconds from the start after which no new measure starts (a device call may run 600 s)."""
PARTS = ("both", "first", "second")
"""A fresh machine's build does not fit one device call with the rest: the parts run as two calls on one machine."""
FIRST_PART_NAME = "first_run_first_part.json"
"""The first part's results, kept in the cache it filled: a second part adds to them only on that cache (never to
a results file of another machine or day that happens to sit in --out)."""
COMPILED_WAIT_S = 480.0
"""The longest the run waits for the switch to compiled views."""


class Run:
    """The measures so far, written to the results file as each is made."""

    def __init__(self, out: Path, deadline_s: float) -> None:
        self.out, self.started, self.deadline_s = out, time.monotonic(), deadline_s
        self.results: dict[str, Any] = {}

    def left(self) -> float:
        return self.deadline_s - (time.monotonic() - self.started)

    def record(self, **measures: Any) -> None:
        self.results.update(measures)
        write_results(self.out, RESULT_NAME, self.results)
        for name, value in measures.items():
            print(f"first_run: {name} = {value}", file=sys.stderr, flush=True)


def make_worker(weights: Path, tiny: bool, max_batch: int | None = None) -> Any:
    from host import InstantMeshWorker

    keywords = official_worker_keywords(weights)
    if tiny:  # the CPU: no compile (its packages would take many minutes there), one object per batch
        keywords["worker_args"] = [*keywords["worker_args"], "--optimize", "channels_last"]
    return InstantMeshWorker(
        sys.executable,
        device="cpu" if tiny else None,
        max_batch=max_batch,
        auto_restart=False,
        startup_timeout=300,
        **keywords,
    )


def timed_object(worker: Any, image: Path, out: Path, steps: int) -> tuple[Any, Any, float]:
    """Views, mesh and export of one object: the views and mesh results and the seconds."""
    start = time.perf_counter()
    views = worker.generate_views(image, num_inference_steps=steps, save_grid=out.with_suffix(".png"))
    mesh = worker.reconstruct(views, out.with_suffix(".obj"))
    return views, mesh, time.perf_counter() - start


def object_stages(views: Any, mesh: Any) -> dict[str, float]:
    """The seconds of each stage the worker reports for one object's views and mesh."""
    parts = {f"views_{k}": float(v) for k, v in views.timings.items() if k.endswith("_s")}
    return parts | {f"mesh_{k}": float(v) for k, v in mesh.timings.items() if k.endswith("_s")}


def one_at_a_time(
    run: Run, worker: Any, images: list[Path], out: Path, steps: int, prefix: str = "", served: bool = True
) -> dict[str, Any]:
    """`OBJECTS_ALONE` warm objects one after another, as Any6D's loop runs them (after one untimed object where
    the worker has not `served` any yet): the medians of the seconds per object, of the views, and of each stage the
    worker reports, as measures named ``<prefix>one_at_a_time_s``, ``<prefix>views_s`` and
    ``<prefix>one_at_a_time_stages`` (none when the deadline left no time)."""
    if not served:
        timed_object(worker, images[0], out / "warm", steps)
    seconds: list[float] = []
    stages: dict[str, list[float]] = {}
    for index in range(OBJECTS_ALONE):
        if run.left() < 0:
            break
        views, mesh, took = timed_object(worker, images[index % len(images)], out / f"alone{index}", steps)
        seconds.append(took)
        parts = object_stages(views, mesh)
        parts["host_and_wire_s"] = took - parts.get("views_total_s", 0.0) - parts.get("mesh_total_s", 0.0)
        for name, value in parts.items():
            stages.setdefault(name, []).append(float(value))
    if not seconds:
        return {}
    medians = {name: statistics.median(values) for name, values in stages.items()}
    return {
        f"{prefix}one_at_a_time_s": statistics.median(seconds),
        f"{prefix}views_s": medians["views_total_s"],
        f"{prefix}one_at_a_time_stages": medians,
    }


def grid_pixels(path: str) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def peak_gib(worker: Any) -> float:
    memory = worker.status().memory
    return 0.0 if memory is None else memory.peak_bytes / 2**30


def first_worker(run: Run, weights: Path, images: list[Path], work: Path, steps: int, tiny: bool) -> float:
    """The first start: its first mesh, then objects until the views run compiled, then warm objects. Returns its
    peak memory."""
    spawned = time.monotonic()
    with make_worker(weights, tiny) as worker:
        loaded = worker.load()
        run.record(first_load_s=time.monotonic() - spawned, first_load_seconds=loaded.load_seconds)
        first, first_mesh, _ = timed_object(worker, images[0], work / "first", steps)
        run.record(time_to_first_mesh_s=time.monotonic() - spawned, gpu=worker.info.device, torch=worker.info.torch)
        run.record(first_object_stages=object_stages(first, first_mesh))
        eager_grid = grid_pixels(first.grid_path)
        status = worker.status().compile
        count = 0
        while status is not None and not status.batch_sizes and status.state not in ("failed", "off"):
            if time.monotonic() - spawned > COMPILED_WAIT_S or run.left() < 0:
                break
            timed_object(worker, images[count % len(images)], work / f"waiting{count}", steps)
            count += 1
            status = worker.status().compile
        compiled = status is not None and bool(status.batch_sizes)  # the first switch (one object's batch size)
        run.record(
            time_to_compiled_s=time.monotonic() - spawned if compiled else None,
            compile_state=None if status is None else status.state,
            compiled_batch_sizes=None if status is None else status.batch_sizes,
            compile_message=None if status is None else status.message,
            objects_while_building=count,
        )
        if compiled:
            again, _, _ = timed_object(worker, images[0], work / "compiled", steps)
            diff = int(abs(grid_pixels(again.grid_path) - eager_grid).max())
            run.record(compiled_vs_eager_max_abs_diff=diff)
        measures = one_at_a_time(run, worker, images, work / "building", steps)
        if measures:
            run.record(one_at_a_time_while_building_s=measures["one_at_a_time_s"])
        return peak_gib(worker)


def finish_build(run: Run, weights: Path, tiny: bool) -> None:
    """What the first worker had not built yet (its full batch size, minutes after the first switch), in the
    foreground as ``python -m host prepare`` builds it: the next start then finds everything built."""
    if tiny:
        return
    from host.api.build_ahead import build_compiled_views

    start = time.monotonic()
    status = build_compiled_views(sys.executable, worker_args=worker_flags(weight_args(weights)))
    run.record(prepare_rest_s=time.monotonic() - start, prepare_rest_built=status.built)


def second_worker(run: Run, weights: Path, images: list[Path], work: Path, steps: int, tiny: bool) -> float:
    """A start on the filled cache, then the batch against alone and the throughput. Returns its peak memory."""
    finish_build(run, weights, tiny)
    spawned = time.monotonic()
    with make_worker(weights, tiny) as worker:
        worker.load()
        run.record(cold_start_cached_s=time.monotonic() - spawned)
        if run.left() < 0:
            return peak_gib(worker)
        pair = images[:2]
        together = [work / f"pair{index}-batch.png" for index in range(2)]
        alone = [work / f"pair{index}-alone.png" for index in range(2)]
        worker.generate_views_many(pair, num_inference_steps=steps, save_grids=together)
        for image, grid in zip(pair, alone, strict=True):
            worker.generate_views(image, num_inference_steps=steps, save_grid=grid)
        diff = max(
            int(abs(grid_pixels(str(a)) - grid_pixels(str(b))).max()) for a, b in zip(together, alone, strict=True)
        )
        run.record(batched_vs_alone_max_abs_diff=diff)
        if run.left() < 0:
            return peak_gib(worker)
        batch = worker.status().max_batch
        size = 32 if tiny else 320
        objects = [synthetic_object(work / "many" / f"object{index}.png", index, size) for index in range(2 * batch)]
        start = time.monotonic()
        outcomes = list(worker.map(objects, work / "map", num_inference_steps=steps))
        minutes = (time.monotonic() - start) / 60
        failed = [outcome for outcome in outcomes if outcome.error is not None]
        run.record(objects_per_min=len(outcomes) / minutes, max_batch=batch, map_failures=len(failed))
        measures = one_at_a_time(run, worker, images, work / "alone", steps)
        if measures:
            run.record(**measures)
        peak = peak_gib(worker)
    if run.left() > 0:
        with make_worker(weights, tiny, max_batch=1) as worker:
            measures = one_at_a_time(
                run, worker, images, work / "alone-max-batch-1", steps, prefix="max_batch_1_", served=False
            )
            if measures:
                run.record(**measures)
            peak = max(peak, peak_gib(worker))
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="a benchmarks.make_weights folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/first_run"))
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--tiny", action="store_true", help="the CPU smoke test: a --tiny weights folder, no compile")
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S, metavar="S")
    parser.add_argument(
        "--part",
        choices=PARTS,
        default="both",
        help="first: the first start on an empty cache; second: the cached start and the batch on the cache the "
        "first part left (built to the full batch first), adding to the results file; both (default)",
    )
    args = parser.parse_args(argv)
    if args.tiny != is_smoke(args.weights):
        parser.error("--tiny goes with a make_weights --tiny folder, and only with one")
    work = Path(tempfile.mkdtemp(prefix="first-run-"))
    cache = Path(os.environ.get("FIRST_RUN_CACHE") or work / "cache")
    if args.part != "second":
        shutil.rmtree(cache, ignore_errors=True)  # a first run: nothing converted, compiled or bundled yet
    cache.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.environ["INSTANTMESH_RPC_CACHE"] = str(cache)
    size = 32 if args.tiny else 320
    images = [synthetic_object(work / f"object{index}.png", index, size) for index in range(OBJECTS_ALONE)]
    run = Run(args.out, args.deadline)
    first_part = cache / FIRST_PART_NAME
    if args.part == "second" and first_part.exists():  # the first part ran on this cache: one run's results
        run.results = json.loads(first_part.read_text())
    run.record(steps=args.steps, tiny=args.tiny)
    peaks = [run.results.get("peak_gpu_gib", 0.0)]
    if args.part != "second":
        peaks.append(first_worker(run, args.weights, images, work, args.steps, args.tiny))
        first_part.write_text(json.dumps({**run.results, "peak_gpu_gib": max(peaks)}, default=str))
    if args.part != "first" and run.left() > 0:
        peaks.append(second_worker(run, args.weights, images, work, args.steps, args.tiny))
    run.record(peak_gpu_gib=max(peaks))
    rows = [(name, value) for name, value in run.results.items()]
    print(table("First run", ["measure", "value"], rows))
    print(json.dumps(run.results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
