"""The next step's reference pass run beside this step's main pass (`overlapped_step`) changes nothing: a whole
request at 75 steps gives the latents of the passes one after the other, bit for bit.

Run 13 found the views 31 LSB from eager here, before the reference graphs wrote into slot buffers of their own
(docs/benchmarks.md, 'The step's two passes side by side'); the step also checks itself at capture and stops
overlapping when it differs, so the test first asks that it still overlaps, then that the request really queued
each next reference pass ahead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .checks import GUIDANCE, SEED, STEPS

pytestmark = pytest.mark.gpu


def final_latents(backend: Any, image: Any) -> Any:
    """The latents the backend's views request decodes (its pipeline's call, stopped before the decoder)."""
    import torch

    size = backend.files.view_size
    (latents,) = backend._pipeline.generate_batch(
        [image],
        [torch.Generator("cpu").manual_seed(SEED)],
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        width=2 * size,
        height=3 * size,
        output_type="latent",
    )
    return latents.clone()


def test_the_reference_pass_beside_the_main_pass_gives_the_latents_of_the_passes_in_order(
    compiled_backend: Any, object_pngs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from PIL import Image

    step = compiled_backend._pipeline.networks.overlapped
    assert step.overlapping, (
        "the step's check at capture found its passes side by side unequal to them in order, so the worker runs them "
        "in order on this GPU (its log has the warning)"
    )
    queued_ahead: list[bool] = []
    write = step._write

    def counted(graphs: Any, slot: int, *inputs: Any) -> None:
        """A reference pass written into the slot the last main pass read is the next step's, queued ahead."""
        queued_ahead.append(slot == step.last_slot)
        write(graphs, slot, *inputs)

    monkeypatch.setattr(step, "_write", counted)
    with Image.open(object_pngs[0]) as image:
        side_by_side = final_latents(compiled_backend, image)
        ahead_side_by_side = sum(queued_ahead)
        queued_ahead.clear()
        monkeypatch.setattr(step, "overlapping", False)
        in_order = final_latents(compiled_backend, image)
    assert (ahead_side_by_side, sum(queued_ahead)) == (STEPS - 1, 0)
    assert torch.isfinite(in_order).all()
    assert torch.equal(side_by_side, in_order), (
        f"max abs diff {(side_by_side - in_order).abs().max().item():.3g} in the latents"
    )
