"""Fixtures of the model tests: the tiny Zero123++ pipeline of the golden data, on one CPU thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TINY_ZERO123PLUS = Path(os.environ.get("INSTANTMESH_GOLDEN", "/work/shared/golden")) / "tiny_zero123plus"
"""Upstream's tiny Zero123++ folder with seeded random weights (/work/shared/golden/README.md)."""


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """The tiny models are faster on one thread, and far faster when other jobs share the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_pipe(one_thread: None) -> Any:
    if not TINY_ZERO123PLUS.is_dir():
        pytest.skip(f"golden data not found at {TINY_ZERO123PLUS}")
    from instantmesh.zero123plus import load_zero123plus

    return load_zero123plus(
        TINY_ZERO123PLUS / "pipeline", TINY_ZERO123PLUS / "whitebg_unet" / "diffusion_pytorch_model.bin"
    )
