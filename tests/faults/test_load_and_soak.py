"""Load and a compressed soak: many requests from many threads through one worker; resources stay flat."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from rpcworker.wire.errors import HandleExpired
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ImagePng, ReconstructParams, ViewsHandle

pytestmark = pytest.mark.faults

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_kinds(pid: int) -> list[str]:
    """What each open descriptor of ``pid`` points at (pipe:[...], /dev/null, socket:[...], ...)."""
    kinds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            kinds.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return kinds


@pytest.mark.slow
def test_10k_requests_from_8_threads_through_one_worker(
    mock_client, object_png: Path, tmp_path: Path, record_property
) -> None:
    """8 threads send 10,000 requests in all (mostly ping/status, every 25th a generate_views +
    reconstruct pair) through one worker: every request answered correctly, no stray or bad frames,
    and the worker's own count matches."""
    client = mock_client("view_size=32")
    threads, total = 8, 10_000
    errors: list[BaseException] = []
    counts = [0] * threads

    def work(n: int) -> None:
        rng = random.Random(n)
        try:
            for i in range(total // threads):
                if i % 25 == 0:
                    v = client.generate_views(
                        GenerateViewsParams(ImagePath(str(object_png)), seed=n, num_inference_steps=2), timeout=30
                    )
                    m = client.reconstruct(
                        ReconstructParams(ViewsHandle(v.handle), str(tmp_path / f"{n}.ply"), overwrite=True), timeout=30
                    )
                    assert m.num_faces > 0
                    counts[n] += 2
                elif rng.random() < 0.7:
                    assert client.ping(timeout=30).pong
                    counts[n] += 1
                else:
                    assert client.status(timeout=30).pid == client.info.pid
                    counts[n] += 1
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    before = client.status().requests_served
    start = time.perf_counter()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    seconds = time.perf_counter() - start
    assert not errors, errors[:3]
    sent = sum(counts)
    record_property("requests", sent)
    record_property("seconds", round(seconds, 2))
    record_property("requests_per_second", round(sent / seconds))
    assert sent >= total
    assert client.status().requests_served - before == sent + 1  # + this status call
    session = client._session
    assert session.bad_frames == 0 and session.unknown_responses == 0
    assert len(list(tmp_path.glob("*.ply"))) == threads


@pytest.mark.slow
def test_compressed_soak_resources_stay_flat_and_handles_are_evicted(
    mock_client, tmp_path: Path, record_property
) -> None:
    """~20 s of objects through one worker (--max-handles 4): each round generates views for a new
    image (inline PNG), reconstructs a mesh, and sometimes reuses an old handle. RSS after warm-up grows
    by < 20 MiB, the fd set is unchanged (no sockets ever), handles never exceed 4, and evicted handles
    answer handle_expired (reason: evicted)."""
    import io

    import numpy as np
    from PIL import Image

    client = mock_client("view_size=64", extra=("--max-handles", "4"))
    pid = client.process.pid
    rng = np.random.default_rng(0)

    def image() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (96, 96, 4), dtype=np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    handles: list[str] = []
    rounds = expired = 0
    warm_rss = warm_fds = None
    samples: list[int] = []
    start = time.monotonic()
    while time.monotonic() - start < SOAK_SECONDS:
        views = client.generate_views(
            GenerateViewsParams(ImagePng(image()), seed=rounds, num_inference_steps=3), timeout=30
        )
        handles.append(views.handle)
        client.reconstruct(
            ReconstructParams(ViewsHandle(views.handle), str(tmp_path / f"m{rounds % 3}.glb"), overwrite=True),
            timeout=30,
        )
        if len(handles) > 6 and rounds % 5 == 0:
            with pytest.raises(HandleExpired, match="evicted"):
                client.reconstruct(ReconstructParams(ViewsHandle(handles[-6]), str(tmp_path / "never.obj")), timeout=30)
            expired += 1
        status = client.status()
        assert status.handles <= 4
        rounds += 1
        if rounds == 30:
            warm_rss, warm_fds = rss_kib(pid), sorted(fd_kinds(pid))
        if rounds % 20 == 0:
            samples.append(rss_kib(pid))
    assert warm_rss is not None, "the soak did not get past warm-up"
    end_rss, end_fds = rss_kib(pid), sorted(fd_kinds(pid))
    record_property("rounds", rounds)
    record_property("rss_kib_warm_end", f"{warm_rss} -> {end_rss}")
    record_property("fds", len(end_fds))
    assert end_rss - warm_rss < 20 * 1024, f"RSS grew from {warm_rss} to {end_rss} KiB: {samples}"
    assert end_fds == warm_fds, f"descriptors changed: {warm_fds} -> {end_fds}"
    assert not [k for k in end_fds if k.startswith("socket:")]
    assert expired > 0 and client.status().handles == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.glb", "m1.glb", "m2.glb"]
