"""Back-pressure over real pipes: inline images flooding a worker behind a slow request are refused busy past its bound, its memory stays bounded, and the host's map waits the refusals out."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from host import InstantMeshWorker
from host.api.inputs import png_bytes
from rpcworker.wire.errors import Cancelled, WorkerBusy
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ImagePng, ProgressParams
from tests.faults.test_load_and_soak import rss_kib

pytestmark = pytest.mark.faults

FLOOD = 200
"""Inline requests of about 1 MiB each sent behind the slow one: unbounded, the worker would grow by 200 MiB."""
BOUND_MIB = 16
RSS_GROWTH_LIMIT_MIB = 80
"""What the flood may add to the worker's RSS: the bound, the lines being read and the allocator's slack."""
DEADLINE_S = 60.0


def noise_png(side: int, seed: int) -> bytes:
    """A PNG that does not compress: about side * side * 3 bytes."""
    return png_bytes(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_a_flood_of_inline_images_behind_a_slow_request_is_refused_past_the_bound_and_rss_stays_bounded(
    mock_client, object_png: Path, record_property
) -> None:
    """200 inline images of 1 MiB each arrive behind a running request on a worker bounded at 16 MiB: about 16
    are queued and the rest refused busy at once (data: size, queued, limit), the worker's RSS grows by less than
    80 MiB (not the 200 MiB it held before the bound), ping is answered meanwhile, and once the slow request is
    cancelled the queued ones complete and a new one is accepted."""
    client = mock_client("view_size=32,step_delay=0.05", extra=("--max-queued-inline-mib", str(BOUND_MIB)))
    pid = client.process.pid
    image = noise_png(592, 0)
    assert 0.95 * 2**20 < len(image) < 1.1 * 2**20
    client.generate_views(GenerateViewsParams(ImagePng(image), num_inference_steps=1), timeout=DEADLINE_S)  # warm
    started = threading.Event()

    def on_progress(progress: ProgressParams) -> None:
        if progress.stage == "diffusion":
            started.set()

    slow = client.request(
        "generate_views", GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=1000), on_progress
    )
    assert started.wait(DEADLINE_S)
    before_kib = rss_kib(pid)
    calls = [
        client.request("generate_views", GenerateViewsParams(ImagePng(image), num_inference_steps=1))
        for _ in range(FLOOD)
    ]
    fits = BOUND_MIB * 2**20 // len(image)
    refused = []
    for call in calls[fits:]:
        with pytest.raises(WorkerBusy) as busy:
            call.result(DEADLINE_S)
        refused.append(busy.value)
    growth_mib = (rss_kib(pid) - before_kib) / 1024
    record_property("rss_growth_mib", round(growth_mib, 1))
    assert growth_mib < RSS_GROWTH_LIMIT_MIB, f"the worker grew by {growth_mib:.0f} MiB"
    assert all(err.data["limit"] == BOUND_MIB * 2**20 and err.data["size"] == len(image) for err in refused)
    assert all(err.data["queued"] + len(image) > err.data["limit"] for err in refused)
    assert client.ping(timeout=5).pong and not slow.done, "the worker keeps answering; the slow request runs on"
    status = client.status()
    assert status.queued_inline_bytes == fits * len(image) and status.queued == fits
    slow.cancel()
    with pytest.raises(Cancelled):
        slow.result(DEADLINE_S)
    assert [call.result(DEADLINE_S).grid_width for call in calls[:fits]] == [2 * 32] * fits  # 2 views wide
    assert client.generate_views(GenerateViewsParams(ImagePng(image), num_inference_steps=1), timeout=DEADLINE_S)
    assert client.status().queued_inline_bytes == 0


def test_map_over_many_inline_images_with_a_low_bound_completes_every_object(
    worker_python: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """map over 48 inline images through a batching worker bounded at 1 MiB (three images): the worker refuses
    many of its views requests busy, and the map sends each again after an earlier request ends, so every object
    gets its mesh and none fails."""
    import logging

    images = [noise_png(320, seed) for seed in range(48)]
    with (
        caplog.at_level(logging.DEBUG, logger="host.api.map"),
        InstantMeshWorker(
            str(worker_python),
            backend="mock",
            max_batch=8,
            prepare=False,
            worker_args=[
                "--mock",
                "view_size=32,step_delay=0.05",
                "--batch-wait-ms",
                "0",
                "--max-queued-inline-mib",
                "1",
            ],
        ) as worker,
    ):
        outcomes = list(worker.map(images, tmp_path / "out", num_inference_steps=4))
        assert worker.status().queued_inline_bytes == 0
    assert [o.index for o in outcomes] == list(range(len(images)))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert len(list((tmp_path / "out").glob("*.obj"))) == len(images)
    assert any("refused" in r.getMessage() for r in caplog.records), "the worker refused nothing: no bound reached"
