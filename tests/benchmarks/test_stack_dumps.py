"""The benchmarks' stack dumps (FAST_PATH_STACKS) show where the other threads are, until stopped."""

from __future__ import annotations

import sys
import threading

import pytest

from benchmarks.common import dump_stacks_every


def test_stack_dumps_show_where_the_main_thread_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other threads of the suite may be dumped too; the test waits for the dump of its own (the main) thread."""
    here = sys._getframe().f_code.co_name
    written = threading.Event()

    class Sink:
        def write(self, text: str) -> None:
            if here in text:  # one stack is one write
                written.set()

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Sink())
    stop = dump_stacks_every(0.01)
    try:
        assert written.wait(10), "no dump showed this thread's stack"
    finally:
        stop.set()
