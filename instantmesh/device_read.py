"""Reading a safetensors file straight onto an accelerator: parallel plain reads into pinned buffers, asynchronous copies.

``safetensors.torch.load_file(path, device="cuda")`` copies each tensor from the memory-mapped file, so every
copy waits on the page faults that fetch its bytes (safetensors issue #729). Here the file's data is cut into
chunks read by several lanes at once (threads: a positioned read releases the GIL, and one thread alone moves a
fraction of what a machine's cores and copy engines move together; see docs/benchmarks.md, 'Reading weights').
Each lane reads its chunks into its two pinned staging buffers in turn and copies each chunk asynchronously,
on its own stream, into tensors allocated on the device while it reads the next: disk (or page cache) and the
copy engines overlap. On the CPU the memory-mapped load is already the fastest and is used as is.

The header is checked before any byte is trusted (``check_header``): the tensors must tile the data section
exactly and end at the end of the file, which also catches a truncated or padded copy cheaply.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import struct
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .weights_file import CheckpointError

CHUNK_BYTES = 8 << 20
"""Staging chunk, two per lane. A start pins its buffers anew, and pinning costs in proportion to the size, so
small chunks win (see docs/benchmarks.md, 'Reading weights')."""
READ_LANES = 8
"""Chunks read at once (threads, each with its own staging buffers and copy stream): more lanes gained nothing
once their buffers' pinning counted (see docs/benchmarks.md, 'Reading weights')."""
HEADER_LIMIT = 100 << 20
"""safetensors' own bound on the JSON header."""

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
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
                raise CheckpointError(
                    f"{path}: tensor {name!r} has bytes [{begin}, {stop}), expected {expected} from {end}"
                )
            end = stop
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: malformed safetensors header entry ({exc!r})") from exc
    if start + end != size:
        raise CheckpointError(
            f"{path}: the tensors end at byte {start + end} but the file has {size} (truncated or padded)"
        )
    return entries, start


def read_safetensors(
    path: str | os.PathLike, device: torch.device | str = "cpu", chunk_bytes: int = CHUNK_BYTES
) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file on `device` (memory-mapped on the CPU, staged reads elsewhere)."""
    device = torch.device(device)
    if device.type == "cpu":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return read_staged(path, device, chunk_bytes)


Span = tuple[int, int, torch.Tensor]
"""A tensor's byte range in the data section and its bytes on the device (a flat uint8 view)."""


def read_staged(
    path: str | os.PathLike,
    device: torch.device,
    chunk_bytes: int = CHUNK_BYTES,
    lanes: int = READ_LANES,
    pinned: bool = True,
) -> dict[str, torch.Tensor]:
    """The staged read of `read_safetensors` (on any device; pinned buffers and streams on CUDA only; `pinned`
    False stages in pageable memory, whose copies the driver makes synchronously; see docs/benchmarks.md,
    'Reading weights')."""
    entries, start = check_header(path)
    out = {name: torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]], device=device) for name, entry in entries}
    spans = [
        (entry["data_offsets"][0], entry["data_offsets"][1], out[name].view(-1).view(torch.uint8))
        for name, entry in entries
    ]
    total = spans[-1][1] if spans else 0
    chunks = [(pos, min(chunk_bytes, total - pos)) for pos in range(0, total, chunk_bytes)]
    if not chunks:
        return out
    lanes = max(1, min(lanes, len(chunks)))
    failed = threading.Event()
    fd = os.open(path, os.O_RDONLY)
    try:

        def lane(index: int) -> None:
            try:
                _read_lane(fd, path, start, chunks[index::lanes], spans, device, pinned, failed)
            except BaseException:
                failed.set()  # the other lanes stop at their next chunk
                raise

        if lanes == 1:
            lane(0)
        else:
            with ThreadPoolExecutor(lanes, thread_name_prefix="read-lane") as pool:
                for done in [pool.submit(lane, index) for index in range(lanes)]:
                    done.result()
    finally:
        os.close(fd)
    return out


def _read_lane(
    fd: int,
    path: str | os.PathLike,
    start: int,
    chunks: Sequence[tuple[int, int]],
    spans: Sequence[Span],
    device: torch.device,
    pinned: bool,
    failed: threading.Event,
) -> None:
    """One lane: its chunks, each read into one of its two staging buffers and copied out on its own stream."""
    cuda = device.type == "cuda"
    with torch.cuda.device(device) if cuda else nullcontext():  # a thread's current device is not its caller's
        size = max(n for _, n in chunks)
        staging = [torch.empty(size, dtype=torch.uint8, pin_memory=cuda and pinned) for _ in range(2)]
        stream = torch.cuda.Stream(device) if cuda else None
        copied: list[Any] = [None, None]
        stops = [stop for _, stop, _ in spans]
        with torch.cuda.stream(stream) if stream is not None else nullcontext():  # once: entering it costs driver calls
            for number, (pos, n) in enumerate(chunks):
                if failed.is_set():
                    return
                slot = number % 2
                if copied[slot] is not None:
                    copied[slot].synchronize()  # its previous copies have left the buffer
                buf = staging[slot]
                _pread_exactly(fd, buf.numpy().data[:n], start + pos, path)
                index = bisect.bisect_right(stops, pos)  # the first tensor that ends past the chunk's start
                while index < len(spans) and spans[index][0] < pos + n:
                    begin, stop, target = spans[index]
                    lo, hi = max(begin, pos), min(stop, pos + n)
                    if lo < hi:
                        target[lo - begin : hi - begin].copy_(buf[lo - pos : hi - pos], non_blocking=cuda)
                    index += 1
                if stream is not None:
                    copied[slot] = stream.record_event()
        if stream is not None:
            stream.synchronize()


def _pread_exactly(fd: int, view: memoryview, offset: int, path: str | os.PathLike) -> None:
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if not n:
            raise CheckpointError(f"{path}: file ended while reading tensors (truncated)")
        got += n
