"""The host's API against a worker whose bound on queued inline images is low: map and generate_views_many wait
out busy refusals and complete every object; a single call raises WorkerBusy in one line."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from host import InstantMeshWorker, WorkerBusy
from host.api.inputs import png_bytes
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ImagePng, ProgressParams

pytestmark = pytest.mark.pipe

OBJECTS = 24
SIDE = 320
"""Noise images of this side: about 300 KiB of PNG each, so the worker's 1 MiB bound holds three."""
BATCH = 8
"""The worker's --max-batch: map keeps two batches' worth of views in flight, more than the bound holds."""
DEADLINE_S = 60.0


def noise_images(count: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    return [png_bytes(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(count)]


def low_bound_worker(worker_python: Path) -> InstantMeshWorker:
    """A batching mock worker (0.05 s a step, batches never wait to fill) that queues at most 1 MiB of inline images."""
    return InstantMeshWorker(
        str(worker_python),
        backend="mock",
        max_batch=BATCH,
        prepare=False,
        worker_args=["--mock", "view_size=32,step_delay=0.05", "--batch-wait-ms", "0", "--max-queued-inline-mib", "1"],
    )


def test_map_over_many_inline_images_waits_out_refusals_and_completes_every_object(
    worker_python: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """map sends two batches of inline images at once to a worker that queues three: the worker refuses some
    busy, the map sends them again as its earlier requests end, and every object gets its mesh, in input order."""
    images = noise_images(OBJECTS)
    with caplog.at_level(logging.DEBUG, logger="host.api.map"), low_bound_worker(worker_python) as worker:
        assert worker.info.max_queued_inline_bytes == 1024 * 1024
        outcomes = list(worker.map(images, tmp_path / "out", num_inference_steps=4))
        assert worker.status().queued_inline_bytes == 0
    assert [o.index for o in outcomes] == list(range(OBJECTS))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert all(Path(o.mesh.path).exists() for o in outcomes if o.mesh is not None)
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusals, "the worker refused nothing: the test did not reach the bound"


def test_generate_views_many_over_many_inline_images_gets_every_views(worker_python: Path) -> None:
    """generate_views_many sends every request at once; those refused busy are sent again after a wait and each
    object gets its views, none an error."""
    images = noise_images(OBJECTS)
    with low_bound_worker(worker_python) as worker:
        views = worker.generate_views_many(images, num_inference_steps=2)
    assert len(views) == OBJECTS
    assert all(not isinstance(v, Exception) for v in views), [v for v in views if isinstance(v, Exception)]


def test_a_single_call_past_the_bound_raises_worker_busy_in_one_line(worker_python: Path, object_png: Path) -> None:
    """With the bound full behind a running request, generate_views raises WorkerBusy at once, one line naming
    the figures and the flag; the worker goes on serving and takes the same call once the queue has room."""
    image = noise_images(1)[0]
    started = threading.Event()

    def on_progress(progress: ProgressParams) -> None:
        if progress.stage == "diffusion":
            started.set()

    with low_bound_worker(worker_python) as worker:
        slow = worker.client.request(
            "generate_views", GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1000), on_progress
        )
        assert started.wait(DEADLINE_S)
        queued = [
            worker.client.request("generate_views", GenerateViewsParams(ImagePng(image), num_inference_steps=1))
            for _ in range(3)
        ]
        with pytest.raises(WorkerBusy) as refused:
            worker.generate_views(image, num_inference_steps=1)
        message = str(refused.value)
        assert "\n" not in message and "busy" in message and "--max-queued-inline-mib" in message
        assert refused.value.data["limit"] == 1024 * 1024 and refused.value.data["queued"] == 3 * len(image)
        slow.cancel()
        for call in queued:
            assert call.result(DEADLINE_S).grid_width > 0
        assert worker.generate_views(image, num_inference_steps=1).handle
