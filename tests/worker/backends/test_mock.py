"""The mock backend: its options (``--mock``) and its batches, which give each object what it gets alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from rpcworker.backends.base import SilentContext
from rpcworker.backends.mock import MockBackend, MockOptions
from rpcworker.wire.errors import Cancelled


def test_mock_options_parse() -> None:
    opts = MockOptions.parse("step_delay=0.5,oom_once=reconstruct+load,noisy,view_size=32")
    assert opts.step_delay == 0.5 and opts.oom_once == {"reconstruct", "load"} and opts.noisy and opts.view_size == 32
    with pytest.raises(ValueError, match="unknown mock option"):
        MockOptions.parse("nope=1")


class Cancellable(SilentContext):
    """Counts its diffusion steps; cancels itself after step ``cancel_after`` (0: never)."""

    def __init__(self, cancel_after: int = 0) -> None:
        self.cancelled = threading.Event()
        self.cancel_after = cancel_after
        self.steps = 0

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        self.steps = step
        if step == self.cancel_after:
            self.cancelled.set()

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("cancelled", {})


def test_the_mock_gives_each_object_the_views_it_gets_alone_and_drops_a_cancelled_one() -> None:
    mock = MockBackend(MockOptions(view_size=24))
    images = [Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(3)]
    alone = [
        mock.generate_views(img, seed, 5, 3.0, SilentContext()).views
        for img, seed in zip(images, [1, 2, 3], strict=True)
    ]
    ctxs = [Cancellable(), Cancellable(cancel_after=2), Cancellable()]
    batched = mock.generate_views_batch(images, [1, 2, 3], 5, 3.0, list(ctxs))
    assert isinstance(batched[1], Cancelled) and ctxs[1].steps == 2
    for i in (0, 2):
        result = batched[i]
        assert not isinstance(result, BaseException) and np.array_equal(result.views, alone[i]) and ctxs[i].steps == 5
    assert not np.array_equal(alone[0], alone[2])
