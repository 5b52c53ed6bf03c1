"""One call captured in a CUDA graph and replayed: the compiled modules' many small launches cost one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

GRAPH_WARMUP_CALLS = 2
"""Calls on a side stream before a CUDA graph capture: the package loads its kernels and cuBLAS its handles."""


class GraphedCall:
    """One call of `call` captured in a CUDA graph: inputs are copied into its own buffers, then it replays.

    `fixed` inputs follow the copied ones and are read in place (another graph's outputs). `capture_stream`: graphs
    that replay at the same time as others need their own, because cuBLAS keeps one workspace per stream and
    graphs captured on one stream share it (None: torch's default capture stream). The output is a buffer of
    the graph, valid until the next replay of any graph of the same pool.
    """

    def __init__(
        self,
        call: Callable[..., Any],
        inputs: Sequence[torch.Tensor],
        pool: Any,
        fixed: Sequence[torch.Tensor] = (),
        capture_stream: torch.cuda.Stream | None = None,
    ) -> None:
        self.inputs = [t.clone() for t in inputs]
        arguments = [*self.inputs, *fixed]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                call(*arguments)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, stream=capture_stream, capture_error_mode="thread_local"):
            self.output = call(*arguments)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        for buffer, value in zip(self.inputs, inputs, strict=True):
            buffer.copy_(value)
        self.graph.replay()
        return self.output
