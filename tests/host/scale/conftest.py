"""The pool tests reuse the fault suite's per-test orphan check and deadline, and mock workers on real pipes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import no_orphans_and_a_deadline  # noqa: F401 - autouse: every test checks for orphans
from tests.host.cli.test_batch import inputs  # noqa: F401 - the batch CLI's inputs (a corrupt image among good ones), for the pool's CLI tests

VIEW_SIZE = 64
"""Small mock views: the pool tests are about scheduling, not pixels."""


@pytest.fixture()
def make_pool(worker_python: Path) -> Iterator[Callable[..., object]]:
    """Factory for started WorkerPools of mock workers; every pool is closed after the test."""
    from host.scale.pool import WorkerPool

    made: list[WorkerPool] = []

    def make(mock: str = "", **kwargs: object) -> WorkerPool:
        options = ",".join(filter(None, [f"view_size={VIEW_SIZE}", mock]))
        pool = WorkerPool(
            str(worker_python), backend="mock", worker_args=["--mock", options], startup_timeout=60, **kwargs
        )
        made.append(pool)
        return pool.start()

    yield make
    for pool in made:
        pool.close()
