"""A step compiled at a few batch sizes, run at any: each batch padded up to a compiled size, or split.

The worker compiles the step for one object and for a full batch (`--max-batch`) at load; a batch in between runs
padded up to the smallest compiled size that holds it, or in calls of the smallest size when the measured times
say that is cheaper (a batch of 2 where 1 and 8 are compiled). Rows of a UNet batch never mix, so padding with
copies of the last row changes nothing for the real rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..sampling import StepFunction, Upcoming, pad_rows

Chunk = tuple[int, int]
"""(rows of the batch, rows the compiled step runs them at): the real rows first, copies of the last after."""


def _four(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A step's four inputs as a tuple of four (for the step's signature)."""
    sample, timestep, context, reference = tensors
    return sample, timestep, context, reference


class BatchedStep:
    """`step` (a compiled step: one shape per batch size) run at any batch size through `plan`.

    `row_counts`: the batch sizes (rows: objects x guidance halves) compiled at load; empty: the first call's.
    `step_seconds`: one call's seconds per compiled row count, once measured (the warm-up fills it). The output
    may be a buffer of the step's (CUDA graphs), valid until its next call: chunks are cloned before the next.
    """

    def __init__(self, step: StepFunction, row_counts: Sequence[int] = ()) -> None:
        self.compiled = step
        self.row_counts = sorted(set(row_counts))
        self.step_seconds: dict[int, float] = {}

    def plan(self, rows: int) -> list[Chunk]:
        if not self.row_counts:  # only before the first call, which fixes them
            return [(rows, rows)]
        padded = next((r for r in self.row_counts if r >= rows), None)
        small = self.row_counts[0]
        calls = -(-rows // small)
        split = [(min(small, rows - i * small), small) for i in range(calls)]
        if padded is None:
            return split
        seconds = self.step_seconds
        if padded != rows and small in seconds and padded in seconds and calls * seconds[small] < seconds[padded]:
            return split
        return [(rows, padded)]

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        reference: torch.Tensor,
        upcoming: Upcoming | None = None,
    ) -> torch.Tensor:
        """`upcoming` reaches the compiled step only when the batch runs as it is, in one call (the next call is
        then handed those very tensors)."""
        rows = sample.shape[0]
        chunks = self.plan(rows)
        if not self.row_counts:
            self.row_counts = [rows]
        inputs = (sample, timestep, context, reference)
        if chunks == [(rows, rows)]:
            return self.compiled(sample, timestep, context, reference, upcoming)
        if len(chunks) == 1:
            return self.compiled(*_four(pad_rows(inputs, chunks[0][1])))[:rows]
        outputs, start = [], 0
        for count, padded in chunks:  # each output is cloned: the next call of the same graph overwrites it
            part = [t if t.dim() == 0 else t[start : start + count] for t in inputs]
            outputs.append(self.compiled(*_four(pad_rows(part, padded)))[:count].clone())
            start += count
        return torch.cat(outputs)
