"""Reading a safetensors file straight onto an accelerator: plain reads into pinned buffers, asynchronous copies.

``safetensors.torch.load_file(path, device="cuda")`` copies each tensor from the memory-mapped file, so every
copy waits on the page faults that fetch its bytes (safetensors issue #729). Here the file is read in large
sequential chunks into two pinned staging buffers in turn, and each chunk's bytes are copied asynchronously
into tensors allocated on the device while the next chunk is read: disk (or page cache) and the copy engine
overlap. On the CPU the memory-mapped load is already the fastest and is used as is.

The header is checked before any byte is trusted (``check_header``): the tensors must tile the data section
exactly and end at the end of the file, which also catches a truncated or padded copy cheaply.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .weights_file import CheckpointError

CHUNK_BYTES = 64 << 20
"""Staging chunk: large enough for sequential reads at full speed, small enough to pin cheaply (two of them)."""
HEADER_LIMIT = 100 << 20
"""safetensors' own bound on the JSON header."""

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def _header(f: BinaryIO, path: Path) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    raw = f.read(8)
    if len(raw) != 8:
        raise CheckpointError(f"{path}: too short for a safetensors file")
    length = struct.unpack("<Q", raw)[0]
    if length > HEADER_LIMIT:
        raise CheckpointError(f"{path}: header of {length} bytes is not a safetensors header")
    try:
        header = json.loads(f.read(length))
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a mapping")
    header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    return entries, 8 + length


def check_header(path: str | os.PathLike) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The tensors (name, header entry) in file order and where the data starts, once the header is checked.

    Raises CheckpointError unless each tensor's byte range matches its dtype and shape, the ranges follow one
    another with no gap or overlap, and the last one ends at the end of the file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        entries, start = _header(f, path)
        size = os.fstat(f.fileno()).st_size
    end = 0
    try:
        for name, entry in entries:
            begin, stop = entry["data_offsets"]
            expected = math.prod(entry["shape"]) * DTYPES[entry["dtype"]].itemsize
            if begin != end or stop - begin != expected:
                raise CheckpointError(f"{path}: tensor {name!r} has bytes [{begin}, {stop}), expected {expected} from {end}")
            end = stop
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: malformed safetensors header entry ({exc!r})") from exc
    if start + end != size:
        raise CheckpointError(f"{path}: the tensors end at byte {start + end} but the file has {size} (truncated or padded)")
    return entries, start


def read_safetensors(path: str | os.PathLike, device: torch.device | str = "cpu", chunk_bytes: int = CHUNK_BYTES) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file on `device` (memory-mapped on the CPU, staged reads elsewhere)."""
    device = torch.device(device)
    if device.type == "cpu":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return read_staged(path, device, chunk_bytes)


def read_staged(path: str | os.PathLike, device: torch.device, chunk_bytes: int = CHUNK_BYTES) -> dict[str, torch.Tensor]:
    """The staged read of `read_safetensors` (on any device; pinned buffers and events on CUDA only)."""
    if device.type == "cuda":
        with torch.cuda.device(device):  # the events and the stream synchronised below are this device's
            return _read_staged(path, device, chunk_bytes)
    return _read_staged(path, device, chunk_bytes)


def _read_staged(path: str | os.PathLike, device: torch.device, chunk_bytes: int) -> dict[str, torch.Tensor]:
    entries, start = check_header(path)
    cuda = device.type == "cuda"
    out = {name: torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]], device=device) for name, entry in entries}
    spans = [(entry["data_offsets"][0], entry["data_offsets"][1], out[name].view(-1).view(torch.uint8)) for name, entry in entries]
    total = spans[-1][1] if spans else 0
    staging = [torch.empty(min(chunk_bytes, max(total, 1)), dtype=torch.uint8, pin_memory=cuda) for _ in range(2)]
    done: list[Any] = [None, None]
    index = 0
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        for chunk, pos in enumerate(range(0, total, chunk_bytes)):
            n = min(chunk_bytes, total - pos)
            buf = staging[chunk % 2]
            if done[chunk % 2] is not None:
                done[chunk % 2].synchronize()  # its previous copies have left the buffer
            _read_exactly(f, buf.numpy().data[:n], path)
            while index < len(spans) and spans[index][0] < pos + n:
                begin, stop, target = spans[index]
                lo, hi = max(begin, pos), min(stop, pos + n)
                target[lo - begin : hi - begin].copy_(buf[lo - pos : hi - pos], non_blocking=cuda)
                if stop > pos + n:
                    break  # continues in the next chunk
                index += 1
            if cuda:
                done[chunk % 2] = torch.cuda.Event()
                done[chunk % 2].record()
    if cuda:
        torch.cuda.current_stream().synchronize()
    return out


def _read_exactly(f: BinaryIO, view: memoryview, path: str | os.PathLike) -> None:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise CheckpointError(f"{path}: file ended while reading tensors (truncated)")
        got += n
