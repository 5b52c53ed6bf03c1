"""A persistent compile cache per machine: Inductor's FX-graph, AOT-autograd and Triton caches in one folder.

The folder is named by a hash of what the compiled code depends on (torch and CUDA versions, GPU name and
compute capability, the weights, the options and the shapes), so a second worker start on the same machine
finds its kernels instead of compiling for minutes, and nothing compiled for another setup is ever reused.
The caches themselves find their entries (keyed by the traced graph); this module makes the folder, private as
every folder of the cache (`rpcworker.wire.cache`: no one else could have put a kernel there), writes the
cache's record of the key beside them (for people; the folder's name is the key), and points the compilers at it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rpcworker.wire.cache import CacheRecord, private_folder, write_record

CACHE_FORMAT = 1
RECORD_NAME = "record.json"


def compile_key(device: torch.device, weights: Mapping[str, Any], options: Any) -> dict[str, Any]:
    """Everything the compiled artefacts depend on, as plain JSON values."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    capability = list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else []
    return {
        "format": CACHE_FORMAT,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": gpu,
        "capability": capability,
        "weights": dict(weights),
        "options": options,
    }


def compile_cache_dir(key: Mapping[str, Any], root: Path) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return root / f"compile-{digest}"


def use_compile_cache(folder: Path, key: Mapping[str, Any]) -> bool:
    """Point Inductor and Triton at `folder` (created if needed); True when it already held artefacts."""
    private_folder(folder)
    reused = any(p.is_file() and p.name != RECORD_NAME for p in folder.rglob("*"))
    if not (folder / RECORD_NAME).is_file():
        versions = {name: json.dumps(value, sort_keys=True, default=str) for name, value in key.items()}
        write_record(folder / RECORD_NAME, CacheRecord[None](versions=versions, files={}, notes=None))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    if hasattr(inductor_config, "autotune_local_cache"):
        inductor_config.autotune_local_cache = True
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "enable_autograd_cache"):
        functorch_config.enable_autograd_cache = True
    return reused
