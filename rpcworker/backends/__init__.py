"""Model backends; each is created from the worker's options."""

from __future__ import annotations

from collections.abc import Callable

from ..options import BackendName, WorkerOptions
from .base import Backend


def _mock(options: WorkerOptions) -> Backend:
    from .mock import MockBackend, MockOptions

    return MockBackend(MockOptions.parse(options.mock))


def _instantmesh(options: WorkerOptions) -> Backend:
    from .model_files import resolve_model_files

    files = resolve_model_files(options)  # before torch is imported: missing weights end the worker at once
    from .instantmesh import InstantMeshBackend

    return InstantMeshBackend.from_options(options, files)


BACKENDS: dict[BackendName, Callable[[WorkerOptions], Backend]] = {"mock": _mock, "instantmesh": _instantmesh}


def create_backend(options: WorkerOptions) -> Backend:
    return BACKENDS[options.backend](options)
