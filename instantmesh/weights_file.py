"""Reading weight files without ever running code from them.

``.safetensors`` holds tensors only; anything else goes through ``torch.load(weights_only=True)``, which
accepts tensors and plain containers and refuses every other pickled object. This is the one place that
opens weight files, so the rule holds for every model.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import torch

SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024
"""The largest safetensors header (JSON) accepted; the format's own limit."""


class CheckpointError(ValueError):
    """A weights file that cannot be read safely or does not match the model."""


def load_weights_file(path: str | Path, mmap: bool = False) -> Any:
    """The file's content: a dict of tensors (safetensors) or the unpickled containers of tensors.

    With ``mmap`` a pickle's tensors are mapped from the file, not read: their keys and shapes cost the pickle's
    few kilobytes however large the file (a file in torch's old, unmappable format is read whole), and a file cut
    short is refused (its zip directory, at the end, is missing).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        if mmap:
            return _load_mapped(path)
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


def _load_mapped(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)  # torch 2.1 maps names only
    except RuntimeError as err:
        if "_use_new_zipfile_serialization" in str(err):  # the pre-1.6 format cannot be mapped
            return torch.load(path, map_location="cpu", weights_only=True)
        raise CheckpointError(f"{path}: not a complete torch file ({str(err).splitlines()[0]})") from err


def safetensors_inventory(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each tensor's dtype and shape, from a ``.safetensors`` file's header alone (no tensor is read).

    Raises CheckpointError when the header is not readable or the file is not as long as the header says (cut
    short, or with bytes after its tensors).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < length <= min(SAFETENSORS_HEADER_LIMIT, size - 8):
            raise CheckpointError(f"{path}: not a safetensors file (header length {length}, file {size} bytes)")
        try:
            header = json.loads(handle.read(length))
        except ValueError as err:
            raise CheckpointError(f"{path}: unreadable safetensors header ({err})") from None
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    end = max((int(entry["data_offsets"][1]) for entry in tensors.values()), default=0)
    if size != 8 + length + end:
        raise CheckpointError(f"{path}: {size} bytes, but its header describes {8 + length + end}: an incomplete file")
    return {name: (str(entry["dtype"]), tuple(int(n) for n in entry["shape"])) for name, entry in tensors.items()}
