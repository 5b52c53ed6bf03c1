"""Reading weight files without ever running code from them.

``.safetensors`` holds tensors only; anything else goes through ``torch.load(weights_only=True)``, which
accepts tensors and plain containers and refuses every other pickled object. This is the one place that
opens weight files, so the rule holds for every model.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A weights file that cannot be read safely or does not match the model."""


def load_weights_file(path: str | Path) -> Any:
    """The file's content: a dict of tensors (safetensors) or the unpickled containers of tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and plain containers, "
            f"and weights are only loaded with torch.load(weights_only=True). Convert it to .safetensors in a "
            f"trusted environment. Detail: {_unpickling_reason(err)}"
        ) from err


def _unpickling_reason(err: pickle.UnpicklingError) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error" in line:
            return line.split(". Please use")[0]
    return lines[0] if lines else repr(err)
