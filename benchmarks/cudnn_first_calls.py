"""What a first cuDNN attention or convolution call costs, and whether a plan made in one thread helps another.

``python -m benchmarks.cudnn_first_calls [--out DIR]`` (CUDA). torch keeps cuDNN's attention graphs and
convolution plans in per-thread caches, and a start's profile put 0.83 s of its packages' first calls in
``aten::_cudnn_attention_forward``. In one fresh process this times, for the UNet's largest attention and one
of its convolutions: the first call in thread A, a second call there, the first call of the same shape in a
new thread B, and one of another shape in B. Writes cudnn_first_calls.json/.md.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed_call(call: Callable[[], Any]) -> float:
    import torch

    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def in_thread(name: str, call: Callable[[], float]) -> float:
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(call()), name=name)
    thread.start()
    thread.join()
    return result[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu-h200"))
    args = parser.parse_args(argv)
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from .common import machine, table, write_results

    half = torch.float16
    torch.zeros(1, device="cuda")

    def attention(queries: int, keys: int) -> Callable[[], Any]:
        q = torch.randn(2, 5, queries, 64, device="cuda", dtype=half)
        k = torch.randn(2, 5, keys, 64, device="cuda", dtype=half)

        def call() -> Any:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(q, k, k)
        return call

    def convolution(channels: int, height: int, width: int) -> Callable[[], Any]:
        image = torch.randn(2, channels, height, width, device="cuda", dtype=half).contiguous(memory_format=torch.channels_last)
        kernel = torch.randn(channels, channels, 3, 3, device="cuda", dtype=half).contiguous(memory_format=torch.channels_last)
        return lambda: torch.nn.functional.conv2d(image, kernel, padding=1)

    rows = []
    for kind, same, other in (("attention", attention(9600, 13696), attention(2400, 3424)),
                              ("convolution", convolution(320, 120, 80), convolution(640, 60, 40))):
        row: dict[str, Any] = {"kind": kind, "first_in_a_s": in_thread("A", lambda same=same: timed_call(same))}
        times_b: list[float] = []

        def in_b(same: Callable[[], Any] = same, other: Callable[[], Any] = other, times: list[float] = times_b) -> float:
            times.extend([timed_call(same), timed_call(same), timed_call(other)])
            return 0.0

        in_thread("B", in_b)
        row.update({"first_in_b_s": times_b[0], "second_in_b_s": times_b[1], "other_shape_in_b_s": times_b[2]})
        rows.append(row)
        print(row, flush=True)
    write_results(args.out, "cudnn_first_calls", {"machine": machine(), "torch": torch.__version__,
                                                  "cudnn": torch.backends.cudnn.version(), "rows": rows})
    text = table(f"cuDNN first calls on {machine().get('gpu')} (torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()})",
                 ["kind", "first call, thread A", "same shape, first in thread B", "again in B", "another shape in B"],
                 [[r["kind"], r["first_in_a_s"], r["first_in_b_s"], r["second_in_b_s"], r["other_shape_in_b_s"]] for r in rows])
    print(text, flush=True)
    (args.out / "cudnn_first_calls.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
