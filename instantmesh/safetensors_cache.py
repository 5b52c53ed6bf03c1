"""A safetensors copy of each pickled weights file (.bin/.ckpt), made once and checked at every use.

Pickles must be unpickled on the CPU (slow, and twice the memory); safetensors map straight to the device.
The copy lives in the private cache folder with the cache's record (`rpcworker.wire.cache`): written
atomically, hashed whole once right after it was written, then trusted at each start while its stamp (size,
mtime, ctime, inode) is what the record says, so any write to it after that rebuilds it, while a start reads
none of it beyond what loading needs. The record also names the source as it was (path, size, mtime, inode and
a hash of sampled blocks of the source: the user's file, outside the cache) and the copy's format; anything
else, or a copy whose header does not tile the file or that fails while it is read, rebuilds it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from rpcworker.wire.cache import CacheMiss, CacheRecord, atomic_file, check_record, describe_files, write_record

from .device_read import check_header, read_safetensors
from .weights_file import CheckpointError

log = logging.getLogger(__name__)

SAMPLE_BLOCKS = 16
BLOCK_BYTES = 1 << 20
COPY_FORMAT = "3"
"""2: the source's inode is part of the record; 3: the cache's one record format, the copy hashed whole."""
CopyRecord = CacheRecord[None]


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


def copy_versions(source: Path) -> dict[str, str]:
    """What a copy is made from: the copy's format and the source file as it is now."""
    stat = source.stat()
    return {
        "copy": COPY_FORMAT,
        "source": str(source.resolve()),
        "source_size": str(stat.st_size),
        "source_mtime_ns": str(stat.st_mtime_ns),
        "source_inode": str(stat.st_ino),
        "source_sampled_sha256": sampled_hash(source),
    }


def copy_paths(source: Path, root: Path) -> tuple[Path, Path]:
    """The copy of `source` in `root`, and its record."""
    name = f"{source.stem}-{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]}"
    return root / f"{name}.safetensors", root / f"{name}.record.json"


def valid_copy(source: Path, root: Path) -> Path | None:
    """The safetensors copy of `source` if its record matches both files now, else None (the reason logged).
    Raises `CacheNotPrivate` when `root` is not private."""
    target, record_path = copy_paths(source, root)
    try:
        check_record(record_path, CopyRecord, copy_versions(source))
        check_header(target)
    except CacheMiss as miss:
        log.info("no usable safetensors copy of %s: %s", source, miss)
        return None
    except (OSError, CheckpointError) as exc:  # the source is gone, or the copy's header is damaged
        log.info("no usable safetensors copy of %s: %s", source, exc)
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
        except (OSError, CheckpointError) as exc:  # damaged in a way neither record nor header shows
            log.warning("rebuilding the safetensors copy of %s: %s", source, exc)
    state_dict = extract()
    try:
        convert(source, state_dict, root)
    except (OSError, RuntimeError) as exc:  # a read-only cache or shared tensors: load without the copy
        log.warning("no safetensors copy of %s: %s", source, exc)
    return {k: v.to(device) for k, v in state_dict.items()}


def convert(source: Path, state_dict: Mapping[str, torch.Tensor], root: Path) -> Path:
    """Write `state_dict` (read from `source`) as the checked safetensors copy; returns its path."""
    from safetensors.torch import save_file

    target, record_path = copy_paths(source, root)
    versions = copy_versions(source)
    with atomic_file(target) as partial:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(partial))
    write_record(record_path, CopyRecord(versions=versions, files=describe_files(root, [target.name]), notes=None))
    return target
