"""Several objects through one diffusion batch: each gets what it would alone, wherever it sits.

On the CPU the batched UNet's float32 matmuls block differently from batch 1, so latents agree to about
1e-5 (not bit for bit) and the uint8 views to at most 1 LSB; the random draws themselves are identical.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from instantmesh.zero123plus.networks.batching import BatchedStep  # noqa: E402
from instantmesh.zero123plus.reference_attention import ReferenceStep  # noqa: E402
from instantmesh.zero123plus.sampling import pad_rows  # noqa: E402
from tests.models.conftest import TINY_ZERO123PLUS as TINY  # noqa: E402
from tests.models.zero123plus.stand_ins import WithStep  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream, pytest.mark.usefixtures("one_thread")]
if not TINY.is_dir():
    pytest.skip(f"golden data not found at {TINY}", allow_module_level=True)

SMALL = dict(num_inference_steps=3, width=64, height=96)
LATENT_ATOL = 1e-4
"""Batched vs alone on the CPU: float32 matmul blocking depends on the batch (measured about 1e-5)."""


class Cancelled(Exception):
    pass


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    cond = Image.open(TINY / "cond.png")
    return [cond, cond.rotate(90), cond.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]


SEEDS = [11, 12, 13]


@pytest.fixture(scope="module")
def alone(pipe, images) -> list:
    return [
        pipe(image, generator=seed, output_type="latent", **SMALL) for image, seed in zip(images, SEEDS, strict=True)
    ]


def _close(a, b) -> bool:
    return bool((a - b).abs().max() <= LATENT_ATOL)


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1]])
def test_each_object_gets_its_alone_result_wherever_it_sits(pipe, images, alone, order) -> None:
    batch = pipe.generate_batch([images[i] for i in order], [SEEDS[i] for i in order], output_type="latent", **SMALL)
    for position, i in enumerate(order):
        assert _close(batch[position], alone[i]), f"object {i} at position {position}"
    assert not _close(batch[0], batch[1])  # the test can tell objects apart


def test_views_agree_to_one_lsb(pipe, images) -> None:
    alone = [
        np.asarray(pipe(image, generator=seed, **SMALL), dtype=np.int16)
        for image, seed in zip(images, SEEDS, strict=True)
    ]
    batch = [np.asarray(grid, dtype=np.int16) for grid in pipe.generate_batch(images, SEEDS, **SMALL)]
    assert max(int(np.abs(a - b).max()) for a, b in zip(alone, batch, strict=True)) <= 1


def test_a_cancelled_object_leaves_without_disturbing_the_others(pipe, images, alone) -> None:
    progress: dict[int, list[int]] = {0: [], 1: [], 2: []}
    checks = []

    def cancel_second_at_step_two() -> None:
        checks.append(None)
        if len(checks) == 3:  # before conditioning, before step 1, before step 2
            raise Cancelled

    batch = pipe.generate_batch(
        images,
        SEEDS,
        output_type="latent",
        progress=[lambda s, t, k=k: progress[k].append(s) for k in range(3)],
        check_cancelled=[None, cancel_second_at_step_two, None],
        **SMALL,
    )
    assert isinstance(batch[1], Cancelled) and progress[1] == [1]
    assert _close(batch[0], alone[0]) and _close(batch[2], alone[2])
    assert progress[0] == progress[2] == [1, 2, 3]


def test_a_bad_input_fails_alone_before_the_batch_starts(pipe, images, alone) -> None:
    batch = pipe.generate_batch([images[0], "not an image", images[2]], SEEDS, output_type="latent", **SMALL)
    assert isinstance(batch[1], Exception) and not isinstance(batch[1], torch.Tensor)
    assert _close(batch[0], alone[0]) and _close(batch[2], alone[2])


def test_a_step_compiled_for_a_bigger_batch_gets_padded_rows(pipe, images, alone) -> None:
    seen = []
    eager = ReferenceStep(pipe.networks.unet, pipe.networks.unet.dtype)

    def fast(*tensors):
        seen.append(tensors[0].shape[0])
        return eager(*tensors[:4])

    before = pipe.use(WithStep(pipe.networks, BatchedStep(fast, row_counts=[8])))
    try:
        batch = pipe.generate_batch(images[:2], SEEDS[:2], output_type="latent", **SMALL)
        pipe.use(WithStep(before, BatchedStep(fast, row_counts=[2])))
        split = pipe.generate_batch(images[:3], SEEDS[:3], output_type="latent", **SMALL)
    finally:
        pipe.use(before)
    assert seen == [8, 8, 8] + [2, 2, 2] * 3  # padded to eight rows; then three objects in calls of one each
    assert all(_close(b, a) for b, a in zip([*batch, *split], [*alone[:2], *alone], strict=True))


def test_the_batched_step_pads_or_splits_by_the_measured_cost() -> None:
    step = BatchedStep(lambda *tensors: tensors[0], row_counts=[2, 16])
    assert step.plan(4) == [(4, 16)]  # nothing measured: one padded call
    step.step_seconds.update({2: 0.026, 16: 0.148})
    assert step.plan(2) == [(2, 2)] and step.plan(16) == [(16, 16)]
    assert step.plan(4) == [(2, 2), (2, 2)]  # 2 x 26 ms beats one 148 ms call
    assert step.plan(3) == [(2, 2), (1, 2)]
    assert step.plan(12) == [(12, 16)]  # 6 x 26 ms does not
    assert step.plan(20) == [(2, 2)] * 10  # more than the largest: calls of the smallest


def test_upcoming_reaches_the_compiled_step_only_for_a_batch_run_as_it_is() -> None:
    told = []
    step = BatchedStep(lambda *inputs: told.append(len(inputs) > 4 and inputs[4] is not None) or inputs[0], [2, 4])
    sample, timestep = torch.zeros(2, 4, 3, 3), torch.tensor(1.0)
    upcoming = (timestep, torch.zeros(2, 4, 3, 3))
    step(sample, timestep, torch.zeros(2, 7, 5), torch.zeros(2, 4, 3, 3), upcoming)
    step(sample[:1], timestep, torch.zeros(1, 7, 5), torch.zeros(1, 4, 3, 3), upcoming)  # padded to 2
    assert told == [True, False]


def test_pad_rows_repeats_the_last_row_and_keeps_scalars() -> None:
    x = torch.arange(6.0).view(3, 2)
    t = torch.tensor(5.0)
    padded, same = pad_rows([x, t], 5)
    assert padded.shape == (5, 2) and torch.equal(padded[3], x[2]) and torch.equal(padded[4], x[2]) and same is t


def test_a_batch_needs_a_generator_per_object(pipe, images) -> None:
    with pytest.raises(ValueError, match="one generator per object"):
        pipe.generate_batch(images[:2], [None, 3], output_type="latent", **SMALL)
