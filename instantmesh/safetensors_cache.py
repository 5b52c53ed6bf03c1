"""A safetensors copy of each pickled weights file (.bin/.ckpt), made once and checked at every use.

Pickles must be unpickled on the CPU (slow, and twice the memory); safetensors map straight to the device.
The copy lives in the cache folder beside a small record of where it came from. It is used only when the
record matches: the source's size, modification time, inode and a hash of sampled blocks, and the copy's own
size, sampled hash and header (its tensors must tile the file exactly; cheap enough for every start: a few
MB read, never the whole file; the copy is written under a temporary name and renamed, so a killed writer
leaves no half file that could pass). Anything else, or a copy that fails while it is read, rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .device_read import check_header, read_safetensors
from .weights_file import CheckpointError

log = logging.getLogger(__name__)

SAMPLE_BLOCKS = 16
BLOCK_BYTES = 1 << 20
RECORD_FORMAT = 2
"""2: the source's inode is part of the record."""


def sampled_hash(path: Path) -> str:
    """sha256 over the size and SAMPLE_BLOCKS blocks spread evenly over the file (the whole file when small)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= SAMPLE_BLOCKS * BLOCK_BYTES:
            digest.update(f.read())
        else:
            step = (size - BLOCK_BYTES) // (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                f.seek(i * step)
                digest.update(f.read(BLOCK_BYTES))
    return digest.hexdigest()


def copy_facts(path: Path) -> dict[str, Any]:
    """What a written copy is checked by at every use: its size and sampled hash (its header is checked apart)."""
    return {"size": path.stat().st_size, "sampled_sha256": sampled_hash(path)}


def _describe(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
        "sampled_sha256": sampled_hash(path),
    }


def _paths(source: Path, root: Path) -> tuple[Path, Path]:
    name = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return root / f"{source.stem}-{name}.safetensors", root / f"{source.stem}-{name}.json"


def valid_copy(source: Path, root: Path) -> Path | None:
    """The safetensors copy of `source` if its record matches both files now, else None."""
    target, record_path = _paths(source, root)
    try:
        record = json.loads(record_path.read_text())
        if record.get("format") != RECORD_FORMAT or record.get("source") != _describe(source):
            return None
        if copy_facts(target) != record.get("copy"):
            return None
        check_header(target)
    except (OSError, ValueError):  # CheckpointError is a ValueError
        return None
    return target


def cached_read(
    source: Path, root: Path, device: torch.device | str, extract: Callable[[], Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The tensors of pickled `source` on `device`: from its checked copy, else from `extract()` (which
    unpickles `source`), writing the copy for the next start."""
    copy = valid_copy(source, root)
    if copy is not None:
        try:
            return read_safetensors(copy, device)
        except (OSError, CheckpointError) as exc:  # damaged where the sampled checks do not look
            log.warning("rebuilding the safetensors copy of %s: %s", source, exc)
    state_dict = extract()
    try:
        convert(source, state_dict, root)
    except (OSError, RuntimeError) as exc:  # a read-only cache or shared tensors: load without the copy
        log.warning("no safetensors copy of %s: %s", source, exc)
    return {k: v.to(device) for k, v in state_dict.items()}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def convert(source: Path, state_dict: Mapping[str, torch.Tensor], root: Path) -> Path:
    """Write `state_dict` (read from `source`) as the checked safetensors copy; returns its path."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    target, record_path = _paths(source, root)
    record_path.unlink(missing_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"format": RECORD_FORMAT, "source": _describe(source), "copy": copy_facts(target)}
    _atomic_write_text(record_path, json.dumps(record, indent=1))
    return target
