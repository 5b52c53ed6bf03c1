"""Out of GPU memory in a request is the protocol's out_of_memory error (code -32030, naming the method), nothing is
written, and the same worker process answers the same request once memory is back.

This process takes all of the device's free memory but `HEADROOM` before the worker's first reconstruct, whose
working memory (the LRM's and FlexiCubes', about 1 GiB; docs/benchmarks.md, 'Mesh memory') is then out of reach.
No reconstruct runs before: the memory it leaves cached in the worker would serve the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import SecondStart

pytestmark = pytest.mark.gpu

HEADROOM = 256 * 2**20
"""Device memory left free: room for what a first call needs besides tensors (the mesh lane's cuBLAS handle,
kernels loaded at their first launch), well below the reconstruct's working memory."""
RETRY_STEP = 64 * 2**20
"""How much less to take when the whole of it cannot be had at once."""
VIEWS_STEPS = 5
"""The views only feed the reconstruct: their step count does not matter here."""
OUT_OF_MEMORY_CODE = -32030


@contextmanager
def gpu_memory_taken(leave: int) -> Iterator[int]:
    """Holds the device's free memory but `leave` bytes in this process while the block runs; yields what is free."""
    import torch

    size = torch.cuda.mem_get_info()[0] - leave
    block = None
    while block is None and size > 0:
        try:
            block = torch.empty(size, dtype=torch.uint8, device="cuda")
        except torch.cuda.OutOfMemoryError:
            size -= RETRY_STEP
    try:
        yield torch.cuda.mem_get_info()[0]
    finally:
        del block
        torch.cuda.empty_cache()


def test_out_of_gpu_memory_is_the_protocols_error_and_the_worker_keeps_serving(
    second_start: SecondStart, object_pngs: list[Path], tmp_path: Path
) -> None:
    from host import OutOfMemory

    worker = second_start.worker
    pid = worker.status().pid
    views = worker.generate_views(object_pngs[1], num_inference_steps=VIEWS_STEPS)
    out = tmp_path / "mesh.obj"
    memory = worker.status().memory
    with gpu_memory_taken(HEADROOM) as free:
        try:
            worker.reconstruct(views, out)
        except OutOfMemory as exc:
            error = exc
        else:
            pytest.fail(f"reconstruct succeeded with {free / 2**20:.0f} MiB of the GPU free (the worker's: {memory})")
    assert error.code == OUT_OF_MEMORY_CODE and error.data["method"] == "reconstruct", (error.code, error.data)
    assert not out.exists()
    mesh = worker.reconstruct(views, out)
    assert mesh.num_faces > 0 and out.is_file()
    status = worker.status()
    assert status.pid == pid and status.busy is None
