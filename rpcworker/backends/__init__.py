"""Model backends; each is created from the worker's command-line arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .base import Backend


def _mock(args: argparse.Namespace) -> Backend:
    from .mock import MockBackend, MockOptions

    return MockBackend(MockOptions.parse(args.mock))


def _instantmesh(args: argparse.Namespace) -> Backend:
    from .instantmesh import InstantMeshBackend

    return InstantMeshBackend.from_args(args)


BACKENDS: dict[str, Callable[[argparse.Namespace], Backend]] = {"mock": _mock, "instantmesh": _instantmesh}


def create_backend(args: argparse.Namespace) -> Backend:
    return BACKENDS[args.backend](args)
