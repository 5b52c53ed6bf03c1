"""The worker's command line as the API builds it from a backend, its weights and its flags."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rpcworker.wire.messages import MeshLane, Preset


def worker_arguments(
    backend: str = "instantmesh",
    *,
    preset: Preset | None = None,
    zero123plus: str | None = None,
    unet: str | None = None,
    lrm: str | None = None,
    config: str | None = None,
    device: str | None = None,
    mock: str | None = None,
    max_batch: int | None = None,
    mesh_lane: MeshLane | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The worker's command-line arguments for a backend and its weights (paths made absolute; the weights'
    checkpoint folders are searched under the host's working directory, wherever the worker starts)."""
    args = ["--backend", backend] + (["--max-batch", str(max_batch)] if max_batch is not None else [])
    for flag, value in (("--preset", preset), ("--device", device), ("--mock", mock), ("--mesh-lane", mesh_lane)):
        if value:
            args += [flag, value]
    for flag, path in (("--zero123plus", zero123plus), ("--unet", unet), ("--lrm", lrm), ("--config", config)):
        if path:
            args += [flag, os.path.abspath(os.path.expanduser(path))]
    if backend == "instantmesh":
        args += ["--weights-root", os.getcwd()]
    return args + list(extra)
