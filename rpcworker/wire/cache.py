"""The cache folder host and worker share: the host stages the worker's code there, the worker keeps the tiny
preset's weights, safetensors copies, bytecode and compiled kernels there. Standard library only."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "INSTANTMESH_RPC_CACHE"
CACHE_FOLDER = "instantmesh-rpc"


def cache_root() -> Path:
    """``INSTANTMESH_RPC_CACHE`` if set, else ``instantmesh-rpc`` in the XDG cache folder (``~/.cache``)."""
    configured = os.environ.get(ENV_CACHE)
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / CACHE_FOLDER
