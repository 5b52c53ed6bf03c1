"""The step as two passes (`ReferenceWrite` then `ReferenceRead`) and the loop's promise that lets a compiled step run
the next reference pass early: each call names the next step's reference tensors, and the next call is handed those
very objects, unless the batch changed. The CUDA side (streams, slots, graphs) is measured on the GPU
(`benchmarks.fast_path`); here, on the CPU, the passes run one after the other."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from PIL import Image  # noqa: E402

from instantmesh.zero123plus.networks.overlapped_step import OverlappedStep  # noqa: E402
from instantmesh.zero123plus.reference_attention import ReferenceRead, ReferenceStep, ReferenceWrite, reference_layers  # noqa: E402
from tests.models.conftest import TINY_ZERO123PLUS as TINY  # noqa: E402
from tests.models.zero123plus.stand_ins import WithStep  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream, pytest.mark.usefixtures("one_thread")]
if not TINY.is_dir():
    pytest.skip(f"golden data not found at {TINY}", allow_module_level=True)

SMALL = dict(num_inference_steps=4, width=64, height=96)
SEEDS = [21, 22]


class LeftTheBatch(Exception):
    pass


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    cond = Image.open(TINY / "cond.png")
    return [cond, cond.rotate(90)]


def step_inputs(pipe) -> tuple[Any, ...]:
    generator = torch.Generator().manual_seed(3)
    rows = 2
    return (
        torch.randn(rows, 4, 12, 8, generator=generator),
        torch.tensor(500.0),
        torch.randn(rows, 77, pipe.networks.unet.config.cross_attention_dim, generator=generator),
        torch.randn(rows, 4, 8, 8, generator=generator),
    )


def test_the_two_passes_equal_the_whole_step_exactly(pipe) -> None:
    sample, timestep, context, reference = step_inputs(pipe)
    dtype = pipe.networks.unet.dtype
    with torch.inference_mode():
        whole = ReferenceStep(pipe.networks.unet, dtype)(sample, timestep, context, reference)
        tokens = ReferenceWrite(pipe.networks.unet, dtype)(timestep, context, reference)
        split = ReferenceRead(pipe.networks.unet, dtype)(sample, timestep, context, *tokens)
        overlapped = OverlappedStep(
            ReferenceWrite(pipe.networks.unet, dtype), ReferenceRead(pipe.networks.unet, dtype), torch.device("cpu")
        )
        told = overlapped(
            sample, timestep, context, reference, (timestep, reference)
        )  # the CPU runs it in order, told or not
    assert len(tokens) == len(reference_layers(pipe.networks.unet)) > 0
    assert torch.equal(split, whole) and torch.equal(told, whole)


class Recording:
    """A fast step that records what each call is handed and told, and computes the eager step."""

    def __init__(self, pipe) -> None:
        self.eager = ReferenceStep(pipe.networks.unet, pipe.networks.unet.dtype)
        self.calls: list[tuple[tuple[Any, ...], Any]] = []

    def __call__(self, *inputs: Any) -> Any:
        tensors, upcoming = inputs[:4], inputs[4] if len(inputs) > 4 else None
        self.calls.append((tensors, upcoming))
        return self.eager(*tensors)


def run_with(pipe, step: Recording, *args: Any, **kwargs: Any) -> list[Any]:
    eager = pipe.use(WithStep(pipe.networks, step))
    try:
        return pipe.generate_batch(*args, output_type="latent", **kwargs, **SMALL)
    finally:
        pipe.use(eager)


def test_every_step_is_handed_the_reference_it_was_told_of(pipe, images) -> None:
    step = Recording(pipe)
    told = run_with(pipe, step, images, SEEDS)
    expected = pipe.generate_batch(images, SEEDS, output_type="latent", **SMALL)
    assert len(step.calls) == SMALL["num_inference_steps"] and step.calls[-1][1] is None
    for (_, upcoming), (following, _) in zip(step.calls, step.calls[1:], strict=False):
        assert upcoming[0] is following[1] and upcoming[1] is following[3]  # the timestep and the reference sample
    assert all(call[0][2] is step.calls[0][0][2] for call in step.calls)  # the hidden states: one tensor throughout
    assert all(torch.equal(a, b) for a, b in zip(told, expected, strict=True))  # drawing ahead changed no draw


def test_after_an_object_leaves_the_next_step_gets_new_tensors_and_the_same_draws(pipe, images) -> None:
    checks: list[None] = []

    def cancel_at_step_two() -> None:
        checks.append(None)
        if len(checks) == 3:  # before conditioning, before step 1, before step 2
            raise LeftTheBatch

    step = Recording(pipe)
    result = run_with(pipe, step, images, SEEDS, check_cancelled=[None, cancel_at_step_two])
    alone = pipe(images[0], generator=SEEDS[0], output_type="latent", **SMALL)
    (_, told), (handed, _) = step.calls[0], step.calls[1]
    assert (
        handed[3].shape[0] == told[1].shape[0] // 2 and handed[3] is not told[1]
    )  # one object's rows, not the announced batch
    assert isinstance(result[1], LeftTheBatch) and (result[0] - alone).abs().max() <= 1e-4
