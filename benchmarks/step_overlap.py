"""Whether a step gets faster when the next step's reference pass runs beside this step's main pass.

``python -m benchmarks.step_overlap --weights DIR [--steps 75] [--compile] --out DIR`` (DIR from
``benchmarks.make_weights``). The reference (write) pass of step k+1 depends only on the condition latents, that
step's noise and its timestep, not on the latents being denoised, so it can run on a second CUDA stream while the
main (read) pass of step k runs; at the UNet's lower resolutions neither pass fills the GPU. This measures, on the
same loaded weights and the same step inputs, each pass captured in a CUDA graph (eager kernels, and with
``--compile`` Inductor's), replayed `steps` times:

- whole: both passes in one graph, one after the other (the shipped step's shape);
- split: the two passes as two graphs, one after the other;
- overlap: the reference graph of step k+1 on one stream, the main graph of step k on another (two slots of
  reference tokens, so neither waits on the other more than the data needs), with equal stream priorities and
  with the main pass's stream first.

Writes step_overlap.json/.md after every row.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from instantmesh.zero123plus.graphed_call import GraphedCall
from instantmesh.zero123plus.reference_attention import ReferenceRead, ReferenceStep, ReferenceWrite, reference_layers
from rpcworker.backends.base import SilentContext
from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files

from .common import last_step_inputs, synthetic_object, table, write_results
from .sessions import weight_args

SEED = 42
GUIDANCE = 4.0
REPEATS = 3
URGENT = -1
"""A stream priority above the default 0 (lower numbers are more urgent)."""
SLOTS = 2
"""Reference-token buffers in flight: step k's main pass reads one while step k+1's reference pass writes the other."""


def graphed(call: Callable[..., Any], inputs: Sequence[torch.Tensor], fixed: Sequence[torch.Tensor] = ()) -> GraphedCall:
    """`call` in a CUDA graph with a private pool and a capture stream of its own (cuBLAS: one workspace per stream)."""
    return GraphedCall(call, inputs, None, fixed, torch.cuda.Stream())


def replays(*graphs: GraphedCall) -> Callable[[int], None]:
    """`steps` times each of `graphs` in turn, on the current stream."""
    def run(steps: int) -> None:
        for _ in range(steps):
            for graph in graphs:
                graph.graph.replay()

    return run


def seconds_per_step(run: Callable[[int], None], steps: int) -> float:
    run(2)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        run(steps)
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def overlapped(refs: Sequence[GraphedCall], mains: Sequence[GraphedCall], main_first_priority: bool) -> Callable[[int], None]:
    """Step k's main graph (slot k % 2) on one stream, step k+1's reference graph (the other slot) on another."""
    main_stream = torch.cuda.Stream(priority=URGENT if main_first_priority else 0)
    ref_stream = torch.cuda.Stream(priority=0)
    ref_done = [torch.cuda.Event() for _ in range(SLOTS)]
    main_done = [torch.cuda.Event() for _ in range(SLOTS)]

    def run(steps: int) -> None:
        ref_stream.wait_stream(torch.cuda.current_stream())
        main_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(ref_stream):
            refs[0].graph.replay()
            ref_done[0].record()
        for k in range(steps):
            slot, other = k % SLOTS, (k + 1) % SLOTS
            with torch.cuda.stream(main_stream):
                main_stream.wait_event(ref_done[slot])
                mains[slot].graph.replay()
                main_done[slot].record()
            if k + 1 < steps:
                with torch.cuda.stream(ref_stream):
                    if k > 0:
                        ref_stream.wait_event(main_done[other])  # step k-1's main pass has read that slot
                    refs[other].graph.replay()
                    ref_done[other].record()
        torch.cuda.current_stream().wait_stream(main_stream)
        torch.cuda.current_stream().wait_stream(ref_stream)

    return run


class Experiment:
    def __init__(self, weights: Path, steps: int, out: Path) -> None:
        self.steps, self.out = steps, out
        self.results: dict[str, Any] = {"steps": steps, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
        files = resolve_model_files(argparse.Namespace(**{"preset": "official", "config": None, "view_size": None, **weight_args(weights)}))
        backend = InstantMeshBackend(files, optimizations=("channels_last",), max_batch=1)
        backend.load(["views"], SilentContext())
        pipeline = backend._pipeline
        image = synthetic_object(out / "bench_object.png", 0)
        from PIL import Image

        self.sample, self.timestep, self.context, self.reference = last_step_inputs(backend, Image.open(image), SEED, GUIDANCE)
        self.unet, self.dtype = pipeline.unet, pipeline.unet.dtype
        self.whole_module = ReferenceStep(self.unet, self.dtype)
        self.write_module = ReferenceWrite(self.unet, self.dtype)
        self.read_module = ReferenceRead(self.unet, self.dtype)
        with torch.inference_mode():
            tokens = self.write_module(self.timestep, self.context, self.reference)
        self.results["reference_layers"] = len(reference_layers(self.unet))
        self.results["reference_token_mib"] = sum(t.numel() * t.element_size() for t in tokens) / 2**20

    def measure(self, kernels: str, whole: Callable[..., Any] | None, write: Callable[..., Any], read: Callable[..., Any]) -> None:
        row: dict[str, Any] = {"kernels": kernels}
        with torch.inference_mode():
            start = time.perf_counter()
            whole_graph = None if whole is None else graphed(whole, (self.sample, self.timestep, self.context, self.reference))
            refs = [graphed(write, (self.timestep, self.context, self.reference)) for _ in range(SLOTS)]
            mains = [graphed(read, (self.sample, self.timestep, self.context), fixed=ref.output) for ref in refs]
            row["prepare_s"] = time.perf_counter() - start
            if whole_graph is not None:
                row["whole_ms"] = 1000 * seconds_per_step(replays(whole_graph), self.steps)
            row["split_ms"] = 1000 * seconds_per_step(replays(refs[0], mains[0]), self.steps)
            row["reference_alone_ms"] = 1000 * seconds_per_step(replays(refs[0]), self.steps)
            row["main_alone_ms"] = 1000 * seconds_per_step(replays(mains[0]), self.steps)
            row["overlap_ms"] = 1000 * seconds_per_step(overlapped(refs, mains, False), self.steps)
            row["overlap_main_first_ms"] = 1000 * seconds_per_step(overlapped(refs, mains, True), self.steps)
            torch.cuda.synchronize()
            if whole_graph is not None:
                row["split_vs_whole_max_abs"] = float((mains[0].output - whole_graph.output).abs().max())
            row["slots_max_abs"] = float((mains[0].output - mains[1].output).abs().max())
        row["overlap_gain"] = row["split_ms"] / min(row["overlap_ms"], row["overlap_main_first_ms"])
        self.results["rows"].append(row)
        self.save()
        print(row, flush=True)
        del whole_graph, refs, mains
        gc.collect()
        torch.cuda.empty_cache()

    def save(self) -> None:
        columns = ["kernels", "whole_ms", "split_ms", "overlap_ms", "overlap_main_first_ms", "reference_alone_ms", "main_alone_ms",
                   "overlap_gain", "split_vs_whole_max_abs", "prepare_s"]
        title = (f"{self.results['gpu']}, torch {self.results['torch']}, {self.steps} steps: ms per step, best of {REPEATS} "
                 f"({self.results['reference_layers']} reference layers, {self.results['reference_token_mib']:.0f} MiB of tokens per step)")
        write_results(self.out, "step_overlap", self.results)
        (self.out / "step_overlap.md").write_text(table(title, columns, [[r.get(c, "") for c in columns] for r in self.results["rows"]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--compile", action="store_true", help="also Inductor's kernels (torch.compile without its CUDA graphs)")
    parser.add_argument("--tuned", action="store_true", help="also Inductor's kernels with coordinate_descent_tuning (the split passes only)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("step_overlap measures CUDA graphs on two streams: it needs a CUDA device")
    args.out.mkdir(parents=True, exist_ok=True)
    experiment = Experiment(args.weights, args.steps, args.out)
    experiment.measure("eager", experiment.whole_module, experiment.write_module, experiment.read_module)
    if args.compile:
        start = time.perf_counter()
        write = torch.compile(experiment.write_module, dynamic=False)
        read = torch.compile(experiment.read_module, dynamic=False)
        whole = torch.compile(experiment.whole_module, dynamic=False)
        experiment.results["compile_note"] = "compiled at the first (warm-up) calls inside prepare_s"
        experiment.measure("inductor", whole, write, read)
        experiment.results["compile_total_s"] = time.perf_counter() - start
        experiment.save()
    if args.tuned:
        import torch._inductor.config as inductor_config

        torch._dynamo.reset()
        with inductor_config.patch(coordinate_descent_tuning=True):
            write = torch.compile(experiment.write_module, dynamic=False)
            read = torch.compile(experiment.read_module, dynamic=False)
            experiment.measure("inductor, coordinate_descent_tuning", None, write, read)


if __name__ == "__main__":
    main()
