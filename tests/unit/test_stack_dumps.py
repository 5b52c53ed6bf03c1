"""The benchmarks' stack dumps (FAST_PATH_STACKS) show where the other threads are, until stopped."""

from __future__ import annotations

import sys
import threading

import pytest

from benchmarks.common import dump_stacks_every


def test_stack_dumps_show_where_the_main_thread_is(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks: list[str] = []
    written = threading.Event()

    class Sink:
        def write(self, text: str) -> None:
            chunks.append(text)
            written.set()

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Sink())
    stop = dump_stacks_every(0.01)
    try:
        assert written.wait(10)
    finally:
        stop.set()
    assert "test_stack_dumps_show_where_the_main_thread_is" in "".join(chunks)
