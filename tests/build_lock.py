"""The machine's build lock held by a test, as another process's build would hold it: what a worker does before
its build can end is then seen without racing the build."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def build_lock_held() -> Iterator[Callable[[], None]]:
    """Holds the lock for the block; yields its early release. Imports the worker's compile code (torch) only
    when used, so a module that imports this is collected without torch."""
    from rpcworker.backends.views_compile import build_lock_path

    descriptor = os.open(build_lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    released = [False]

    def release() -> None:
        if not released[0]:
            released[0] = True
            os.close(descriptor)

    try:
        yield release
    finally:
        release()
