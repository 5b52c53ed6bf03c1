"""The denoising step as its two passes, the next step's reference pass running beside this step's main pass.

The reference (write) pass of step k+1 needs the condition latents, that step's noise and timestep, and the hidden
states, never the latents being denoised; so, told what the next step's reference will be, it runs on a CUDA stream
of its own while step k's main (read) pass runs, into the other of two slots of reference tokens. At the UNet's lower
resolutions neither pass fills the GPU, so side by side they take less than one after the other (see
docs/benchmarks.md, 'The step's two passes side by side').

Each pass runs as a CUDA graph per batch size and slot. The reference graphs replay on the side stream, one after
another, with a capture stream of their own (cuBLAS keeps one workspace per stream) and a memory pool of their own,
and each copies its tokens into its slot's buffers, allocated outside any pool. Graphs that share a pool may place
one graph's outputs in memory another frees during its capture: with the tokens left as the graphs' own outputs,
the reference pass of step k+2 overwrote the tokens step k+1's main pass was reading (views far from eager's; see
docs/benchmarks.md, 'The step's two passes side by side'). The main graphs share the pipeline's pool; they run
in order on the caller's stream, like its other graphs. Every reference replay first waits for all the work
queued on the caller's stream (its inputs are made there, and the main pass that last read that slot was queued
there); every main replay waits for its slot's reference. At each batch size's capture the step checks itself:
steps of two different inputs, in turn, each told of the next, must give what the passes in order give those
inputs bit for bit, or this step never overlaps again (logged). Without CUDA graphs (the CPU) the two passes run
one after the other, with the same results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..sampling import Upcoming
from .graphed_call import GraphedCall

log = logging.getLogger("instantmesh.overlapped_step")

SLOTS = 2
"""Reference tokens in flight: step k's main pass reads one slot while step k+1's reference pass writes the other."""
GRAPHS_PHASE = "step_graphs_s"
"""`OverlappedStep.seconds`: capturing both passes' CUDA graphs (every batch size and slot)."""
CHECK_PHASE = "step_overlap_check_s"
"""`OverlappedStep.seconds`: the self-check of the passes side by side against one after the other."""
CHECK_ROUNDS = 2
"""Rounds of the self-check, each a step of the first input and one of the second, told of the next."""
URGENT = -1
"""The reference graphs' capture stream comes from torch's pool of high-priority streams: torch hands out pooled
streams round robin, and its default capture stream (the main graphs') is a normal-priority one, so the two can
never be one stream, and cuBLAS's per-stream workspace never one buffer for graphs that replay at once."""


@dataclass
class _Graphs:
    """One batch size's captured passes: per slot, a reference graph and the main graph reading its tokens."""

    references: list[GraphedCall]
    mains: list[GraphedCall]
    written: list[torch.cuda.Event]
    """Per slot: recorded on the side stream after that slot's last reference replay."""


@dataclass(frozen=True)
class _Ahead:
    """A reference pass already queued for the next call: which slot, and the very tensors it was made from."""

    rows: int
    slot: int
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    def matches(self, rows: int, inputs: Sequence[torch.Tensor]) -> bool:
        return rows == self.rows and all(a is b for a, b in zip(self.inputs, inputs, strict=True))


class OverlappedStep:
    """`ReferenceStep`'s equal made of `reference` (`ReferenceWrite`'s call) and `main` (`ReferenceRead`'s call).

    ``step(sample, timestep, context, reference_sample, upcoming)``: with `upcoming`, the next step's reference pass
    is queued beside this step's main pass, and the next call, given those same tensors (by identity, unchanged in
    place), uses it. With CUDA graphs the output is a graph buffer, valid until the next replay of any graph of the
    pipeline's pool.
    """

    def __init__(
        self,
        reference: Callable[..., Any],
        main: Callable[..., Any],
        device: torch.device,
        pool: Any = None,
        cuda_graphs: bool = True,
    ) -> None:
        self.reference, self.main, self.device = reference, main, device
        self.parts = {"reference": reference, "main": main}
        """By package prefix (`packaged.PACKAGED_PARTS`)."""
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self.pool = pool
        """The pipeline's graph pool, for the main graphs (they run in order with its other graphs)."""
        self.graphs: dict[int, _Graphs] = {}
        self.ahead: _Ahead | None = None
        self.last_slot = SLOTS - 1
        self.overlapping = self.cuda_graphs
        """False once the self-check found the passes side by side unequal to them in order: `upcoming` is ignored."""
        self.seconds: dict[str, float] = {}
        if self.cuda_graphs:
            self.side = torch.cuda.Stream(device)
            self.reference_capture = torch.cuda.Stream(device, priority=URGENT)
            self.reference_pool = torch.cuda.graph_pool_handle()

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        reference: torch.Tensor,
        upcoming: Upcoming | None = None,
    ) -> torch.Tensor:
        if not self.cuda_graphs:
            out: torch.Tensor = self.main(sample, timestep, context, *self.reference(timestep, context, reference))
            return out
        rows = sample.shape[0]
        graphs = self.graphs.get(rows) or self._capture(sample, timestep, context, reference)
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead.matches(rows, (timestep, context, reference)):
            slot = ahead.slot
        else:  # nothing queued, or not for these rows (an object left the batch): the reference pass now
            slot = self._other(ahead.slot if ahead is not None else self.last_slot)
            self._write(graphs, slot, timestep, context, reference)
        if upcoming is not None and self.overlapping:
            following = self._other(slot)
            self._write(graphs, following, upcoming[0], context, upcoming[1])
            self.ahead = _Ahead(rows, following, (upcoming[0], context, upcoming[1]))
        torch.cuda.current_stream(self.device).wait_event(graphs.written[slot])
        self.last_slot = slot
        result: torch.Tensor = graphs.mains[slot](sample, timestep, context)
        return result

    @staticmethod
    def _other(slot: int) -> int:
        return (slot + 1) % SLOTS

    def _write(
        self, graphs: _Graphs, slot: int, timestep: torch.Tensor, context: torch.Tensor, reference: torch.Tensor
    ) -> None:
        """Queue slot `slot`'s reference pass on the side stream, after everything queued so far on this one."""
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        for tensor in (timestep, context, reference):
            if tensor.is_cuda:  # made on this stream, read on the side one: its memory is not reused before that
                tensor.record_stream(self.side)
        with torch.cuda.stream(self.side):
            graphs.references[slot](timestep, context, reference)
            graphs.written[slot].record()

    def _capture(
        self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, reference: torch.Tensor
    ) -> _Graphs:
        """Both passes' first calls at this batch size (a package's load or build), then their graphs per slot."""
        tokens = self.reference(timestep, context, reference)
        self.main(sample, timestep, context, *tokens)
        start = time.perf_counter()
        references = [
            GraphedCall(
                _writing_into(
                    [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device) for t in tokens],
                    self.reference,
                ),
                (timestep, context, reference),
                self.reference_pool,
                capture_stream=self.reference_capture,
            )
            for _ in range(SLOTS)
        ]
        mains = [
            GraphedCall(self.main, (sample, timestep, context), self.pool, fixed=written.output)
            for written in references
        ]
        graphs = self.graphs[sample.shape[0]] = _Graphs(references, mains, [torch.cuda.Event() for _ in range(SLOTS)])
        torch.cuda.synchronize()
        self._add_seconds(GRAPHS_PHASE, time.perf_counter() - start)
        if self.overlapping:
            start = time.perf_counter()
            self.overlapping = False  # until the check says otherwise, also if it raises
            self.overlapping = self._check(sample, timestep, context, reference)
            self._add_seconds(CHECK_PHASE, time.perf_counter() - start)
        return graphs

    def _check(
        self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, reference: torch.Tensor
    ) -> bool:
        """Whether steps of two inputs in turn, each told of the next, give what the passes in order give each input,
        bit for bit (the same graphs on the same inputs: any difference is the two streams' doing)."""
        inputs = [(sample, reference), (sample.flip(-1), reference.flip(-1))]
        in_order = [self(s, timestep, context, r).clone() for s, r in inputs]
        self.overlapping = True
        sequence = [k % len(inputs) for k in range(CHECK_ROUNDS * len(inputs))]
        equal = []
        for position, k in enumerate(sequence):
            following = sequence[position + 1] if position + 1 < len(sequence) else None
            upcoming = None if following is None else (timestep, inputs[following][1])
            equal.append(torch.equal(self(inputs[k][0], timestep, context, inputs[k][1], upcoming), in_order[k]))
        self.ahead = None
        if not all(equal):
            log.warning(
                "the step's passes side by side differ from them in order here (steps equal: %s): they run in order",
                equal,
            )
        return all(equal)

    def _add_seconds(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


def _writing_into(slot: list[torch.Tensor], reference: Callable[..., Any]) -> Callable[..., tuple[torch.Tensor, ...]]:
    """`reference`'s call, its tokens copied into `slot` (buffers outside any graph pool), which it returns."""

    def write(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for buffer, tokens in zip(slot, reference(*inputs), strict=True):
            buffer.copy_(tokens)
        return tuple(slot)

    return write
