"""Which scaled-dot-product-attention kernel the views' step should run on this GPU: each backend's time at the
step's own attention shapes, and its difference from float32 math.

``python -m benchmarks.attention_backends [--out benchmarks/results/gpu-h100]`` on a CUDA machine. The Zero123++
UNet (640 x 960 views, head size 64) attends at four resolutions; per denoising step every self-attention layer
runs twice: the reference pass over the condition's tokens (its 512 x 512 image), the main pass over the views'
tokens with the reference's appended to its keys. Cross-attention (77 text tokens) is left out: a small share of
the step. Times are CUDA-event medians of back-to-back calls; the sum weighs each shape by its layers. Also which fused op ``torch.export``
picks for an attention call under each backend setting: what a package built that way would run. Writes
attention_backends.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from .common import table, write_results

RESULT_NAME = "attention_backends"
HEAD_SIZE = 64
LATENT_TOKENS = (120 * 80, 60 * 40, 30 * 20, 15 * 10)
"""Latent positions per resolution level of a 640 x 960 grid (the VAE's factor 8, then halved per level)."""
REFERENCE_TOKENS = (64 * 64, 32 * 32, 16 * 16, 8 * 8)
"""The same for the 512 x 512 condition image the reference pass denoises."""
HEADS = (5, 10, 20, 20)
SELF_ATTENTION_LAYERS = (5, 5, 5, 1)
"""Per level: two in the down block and three in the up block; one in the middle block at the lowest level."""
ROW_COUNTS = (2, 16)
"""UNet rows: one object (its two guidance halves), and the default max batch of 8."""
BACKENDS = ("flash", "efficient", "cudnn")
REPEATS = 30


def step_shapes() -> list[tuple[int, int, int, int]]:
    """(heads, query tokens, keys, layers) of one step's self-attention calls: per level the reference pass, then
    the main pass, whose keys are its own tokens and the reference's."""
    shapes = []
    for views, reference, heads, layers in zip(
        LATENT_TOKENS, REFERENCE_TOKENS, HEADS, SELF_ATTENTION_LAYERS, strict=True
    ):
        shapes += [(heads, reference, reference, layers), (heads, views, views + reference, layers)]
    return shapes


def backend(name: str) -> Any:
    from torch.nn.attention import SDPBackend

    return {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]


def inputs(rows: int, heads: int, tokens: int, keys: int, seed: int = 0) -> tuple[Any, Any, Any]:
    import torch

    generator = torch.Generator("cuda").manual_seed(seed)

    def draw(length: int) -> Any:
        shape = (rows, heads, length, HEAD_SIZE)
        return torch.randn(shape, generator=generator, device="cuda", dtype=torch.float16)

    return draw(tokens), draw(keys), draw(keys)


def time_ms(name: str, q: Any, k: Any, v: Any) -> float | None:
    """Median milliseconds of one call with only `name`'s kernel allowed; None where it cannot run."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    try:
        with sdpa_kernel([backend(name)]):
            for _ in range(3):
                F.scaled_dot_product_attention(q, k, v)
            times = []
            for _ in range(REPEATS):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                F.scaled_dot_product_attention(q, k, v)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
    except RuntimeError as exc:
        print(f"attention_backends: {name} cannot run {tuple(q.shape)}x{tuple(k.shape)}: {exc}".splitlines()[0])
        return None
    return statistics.median(times)


def max_difference(name: str, q: Any, k: Any, v: Any) -> float | None:
    """Largest absolute difference from float32 math attention on the same float16 inputs."""
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel([backend("math")]):
        exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    try:
        with sdpa_kernel([backend(name)]):
            fused = F.scaled_dot_product_attention(q, k, v)
    except RuntimeError:
        return None
    return float((fused.float() - exact).abs().max())


def exported_op(names: list[str]) -> str:
    """The fused attention op in ``torch.export``'s graph (after decompositions) with only `names` allowed."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    class Attend(torch.nn.Module):
        def forward(self, q: Any, k: Any, v: Any) -> Any:
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = inputs(2, HEADS[0], LATENT_TOKENS[0], LATENT_TOKENS[0] + REFERENCE_TOKENS[0])
    try:
        with sdpa_kernel([backend(name) for name in names]):
            graph = torch.export.export(Attend(), (q, k, v)).run_decompositions().graph
    except Exception as exc:  # noqa: BLE001 - reported, whatever the exporter raises
        return f"error: {type(exc).__name__}: {exc}".splitlines()[0]
    ops = [str(node.target) for node in graph.nodes if node.op == "call_function" and "attention" in str(node.target)]
    return ", ".join(ops) or "none"


def measure() -> dict[str, Any]:
    import torch

    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": []}
    totals = {(name, rows): 0.0 for name in BACKENDS for rows in ROW_COUNTS}
    differences: dict[str, float] = {}
    for rows in ROW_COUNTS:
        for heads, tokens, keys, layers in step_shapes():
            q, k, v = inputs(rows, heads, tokens, keys)
            row: dict[str, Any] = {"rows": rows, "heads": heads, "tokens": tokens, "keys": keys, "layers": layers}
            for name in BACKENDS:
                ms = time_ms(name, q, k, v)
                row[f"{name}_ms"] = ms
                totals[name, rows] += float("inf") if ms is None else ms * layers
                if rows == ROW_COUNTS[0]:
                    diff = max_difference(name, q, k, v)
                    if diff is not None:
                        differences[name] = max(differences.get(name, 0.0), diff)
            results["shapes"].append(row)
            del q, k, v
    results["step_self_attention_ms"] = {f"{name}@{rows}": totals[name, rows] for name, rows in totals}
    results["max_abs_diff_vs_float32_math"] = differences
    results["exported_op"] = {
        "default": exported_op(["flash", "efficient", "cudnn", "math"]),
        **{name: exported_op([name, "math"]) for name in BACKENDS},
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attention_backends"))
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("attention_backends: needs a CUDA GPU", file=sys.stderr)
        return 2
    results = measure()
    write_results(args.out, RESULT_NAME, results)
    rows = [
        (f"{s['rows']}x{s['heads']}x{s['tokens']} keys {s['keys']} (x{s['layers']})", *[s[f"{n}_ms"] for n in BACKENDS])
        for s in results["shapes"]
    ]
    rows.append(("per step, all self-attention", *[results["step_self_attention_ms"][f"{n}@2"] for n in BACKENDS]))
    print(table(f"Self-attention kernels, ms ({results['gpu']})", ["shape", *BACKENDS], rows))
    print({"max_abs_diff_vs_float32_math": results["max_abs_diff_vs_float32_math"]})
    print({"exported_op": results["exported_op"], "per_step": results["step_self_attention_ms"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
