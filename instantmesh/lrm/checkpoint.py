"""Reading and writing LRM weights in the official InstantMesh checkpoint layout.

Official `.ckpt` files are PyTorch-Lightning containers: `{"state_dict": {"lrm_generator.<key>": tensor,
...}, ...}`, possibly with other top-level modules (e.g. the training LPIPS net) that we ignore. They are
read with `weights_only=True` only, so a file that needs arbitrary unpickling is refused.
`.safetensors` files are accepted with or without the prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..weights_file import CheckpointError, load_weights_file

PREFIX = "lrm_generator."
_LIST_LIMIT = 5


def _strip_prefix(state_dict: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    if any(key.startswith(PREFIX) for key in state_dict):
        picked = {key[len(PREFIX) :]: value for key, value in state_dict.items() if key.startswith(PREFIX)}
    else:
        picked = dict(state_dict)
    not_tensors = [key for key, value in picked.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source}: entries that are not tensors: {not_tensors[:_LIST_LIMIT]}")
    return picked


def read_lrm_state_dict(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The LRM state dict (keys without `lrm_generator.`) from a `.ckpt`/`.pt`/`.bin` or `.safetensors` file;
    with `mmap`, a pickle's tensors are mapped from the file, not read (for checking keys and shapes)."""
    path = Path(path)
    container = load_weights_file(path, mmap=mmap)
    if not isinstance(container, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found {type(container).__name__}")
    state_dict = container.get("state_dict", container)
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state_dict).__name__}, not a dict")
    return _strip_prefix(state_dict, str(path))


def _summarise(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = f", … (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return f"{len(items)} {label}: {shown}{more}"


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the missing, unexpected and shape-mismatched keys, if any."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} (file {list(state_dict[key].shape)} vs model {list(expected[key].shape)})"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    problems = [
        _summarise(label, items)
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched))
        if items
    ]
    if problems:
        raise CheckpointError(
            f"{source}: weights do not match the model (keys shown without '{PREFIX}'): " + "; ".join(problems)
        )


def read_lrm_weights(path: str | Path, device: torch.device | str, cache: Path) -> dict[str, torch.Tensor]:
    """`read_lrm_state_dict` straight onto `device`; a pickle goes through its checked safetensors copy in
    `cache` (made at the first read), so later starts neither unpickle nor copy through the CPU."""
    from ..device_read import read_safetensors
    from ..safetensors_cache import cached_read

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _strip_prefix(read_safetensors(path, device), str(path))
    return cached_read(path, cache, device, lambda: read_lrm_state_dict(path))


def load_lrm_checkpoint(
    model: nn.Module,
    path: str | Path,
    assign: bool = False,
    device: torch.device | str = "cpu",
    cache: Path | None = None,
) -> None:
    """Strictly load an official-layout checkpoint into `model`.

    With `assign=True` the file's tensors replace the parameters (use it for a model built on the meta
    device, which skips random initialisation). With a `cache` folder they are read onto `device` through
    `read_lrm_weights`; without, onto the CPU.
    """
    state_dict = read_lrm_state_dict(path) if cache is None else read_lrm_weights(path, device, cache)
    check_state_dict(model, state_dict, str(path))
    model.load_state_dict(state_dict, strict=True, assign=assign)


def save_lrm_checkpoint(
    state_dict: Mapping[str, torch.Tensor], path: str | Path, extra: Mapping[str, Any] | None = None
) -> None:
    """Write LRM weights as the official layout: `.safetensors` (prefixed keys) or a Lightning-style `.ckpt`.

    `extra` adds other top-level `state_dict` entries (e.g. `lpips.*`) to mimic a training checkpoint.
    """
    path = Path(path)
    prefixed = {PREFIX + key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    if extra:
        prefixed.update({key: value.detach().cpu().contiguous() for key, value in extra.items()})
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(prefixed, str(path))
    else:
        torch.save({"state_dict": prefixed}, path)
