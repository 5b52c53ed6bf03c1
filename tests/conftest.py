"""Shared fixtures: where the project's environments are, and workers that are always cleaned up."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(os.environ.get("INSTANTMESH_GOLDEN", ROOT.parent / "shared" / "golden"))


def _env_python(name: str, override: str) -> Path:
    configured = os.environ.get(override)
    return Path(configured) if configured else ROOT / ".venvs" / name / "bin" / "python"


WORKER_PYTHON = _env_python("worker", "INSTANTMESH_RPC_TEST_WORKER_PYTHON")
MODELS_PYTHON = _env_python("models", "INSTANTMESH_RPC_TEST_MODELS_PYTHON")
HOST_PYTHON = _env_python("host", "INSTANTMESH_RPC_TEST_HOST_PYTHON")


@pytest.fixture(scope="session")
def worker_python() -> Path:
    """The Python 3.10 env that runs the mock worker (scripts/setup.sh makes it)."""
    if not WORKER_PYTHON.exists():
        pytest.fail(f"{WORKER_PYTHON} missing: run scripts/setup.sh")
    return WORKER_PYTHON


@pytest.fixture()
def mock_client(worker_python: Path) -> Iterator[Callable[..., object]]:
    """Factory for started WorkerClients on the mock backend; every one is closed after the test."""
    from host.worker.client import WorkerClient
    from host.worker.process import WorkerCommand

    made: list[WorkerClient] = []

    def make(mock: str = "", *, extra: tuple[str, ...] = (), **kwargs) -> WorkerClient:
        args = ["--backend", "mock", *(["--mock", mock] if mock else []), *extra]
        client = WorkerClient(WorkerCommand.python(worker_python), args, startup_timeout=30, **kwargs)
        made.append(client)
        client.start()
        return client

    yield make
    for client in made:
        client.close(timeout=5)
        if client.process is not None:
            client.process.kill()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache for the tiny preset's weights, shared by every worker this test session starts."""
    path = tmp_path_factory.mktemp("instantmesh-rpc-cache")
    os.environ["INSTANTMESH_RPC_CACHE"] = str(path)
    return path


@pytest.fixture()
def object_png(tmp_path: Path) -> Path:
    """A small RGBA object on a transparent background."""
    import numpy as np
    from PIL import Image

    rgba = np.zeros((64, 64, 4), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    inside = (yy - 32) ** 2 + (xx - 30) ** 2 < 18**2
    rgba[inside] = [200, 80, 40, 255]
    path = tmp_path / "object.png"
    Image.fromarray(rgba).save(path)
    return path


def _version(name: str) -> tuple[int, ...]:
    import re
    from importlib.metadata import PackageNotFoundError, version

    try:
        return tuple(int(p) for p in re.findall(r"\d+", version(name).split("+")[0])[:3])
    except PackageNotFoundError:
        return ()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``needs(package, minimum, reason)`` skips where ``package`` is older, saying why: upstream's
    pins (torch 2.1.0, diffusers 0.20.2, ...) lack a few newer features."""
    for item in items:
        for mark in item.iter_markers("needs"):
            package, minimum, reason = mark.args
            have = _version(package)
            if have and have < minimum:
                item.add_marker(pytest.mark.skip(reason=f"{reason}; this env has {package} {'.'.join(map(str, have))}"))
