"""The InstantMesh white-background UNet's weights: read once into a checked safetensors copy, then straight
to the device, and loaded strictly (same keys and shapes, no prefix), as InstantMesh does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from rpcworker.wire.cache import cache_root

from ..weights_file import CheckpointError, load_weights_file

PathLike = str | os.PathLike


def read_state_dict(path: PathLike, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A flat tensor state dict from `.safetensors`, or from a torch pickle loaded with `weights_only=True`.

    Pickles that hold anything but tensors and plain containers are refused, never executed. A pickle is
    converted once to a checked safetensors copy in the cache folder, which later reads bring straight to
    `device` (`instantmesh.device_read`).
    """
    from ..device_read import read_safetensors
    from ..safetensors_cache import cached_read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UNet weights not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path, device)

    def unpickle() -> Mapping[str, torch.Tensor]:
        state_dict = load_weights_file(path)
        if not isinstance(state_dict, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
        ):
            raise CheckpointError(f"{path}: expected a flat mapping of parameter names to tensors")
        return state_dict

    return cached_read(path, cache_root() / "safetensors", device, unpickle)


def _preview(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_unet_weights(
    unet: torch.nn.Module, path: PathLike, device: torch.device | str = "cpu", assign: bool = False
) -> None:
    """Load a raw UNet state dict strictly (same keys and shapes, no prefix), as InstantMesh does.

    With `assign` the file's tensors (read onto `device`) become the parameters: for a UNet built on meta.
    """
    apply_unet_weights(unet, read_state_dict(path, device), path, assign)


def apply_unet_weights(
    unet: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: PathLike, assign: bool = False
) -> None:
    """The strict load of `load_unet_weights`, for a state dict already read from `path` (named in errors)."""
    check_unet_state_dict(unet, state_dict, path)
    unet.load_state_dict(state_dict, strict=True, assign=assign)
    left = [name for name, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{path}: {len(left)} UNet tensors were not in the file: {_preview(left)}")


def check_unet_state_dict(unet: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: PathLike) -> None:
    """CheckpointError unless `state_dict` has exactly the UNet's keys, each with its shape (no prefix)."""
    expected = unet.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected.keys() & state_dict.keys()
        if state_dict[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"{path}: does not match the UNet ({len(expected)} keys expected, file has {len(state_dict)})"]
        if missing:
            lines.append(f"  missing {len(missing)}: {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected {len(unexpected)}: {_preview(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatch {len(mismatched)} (file vs model): {_preview(mismatched)}")
        prefixes = {k.split(".", 1)[0] for k in unexpected}
        if len(prefixes) == 1 and missing and all(k.split(".", 1)[-1] in expected for k in unexpected):
            lines.append(f"  the file's keys carry a {prefixes.pop() + '.'!r} prefix; a raw UNet state dict has none")
        raise CheckpointError("\n".join(lines))
