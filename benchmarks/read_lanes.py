"""How fast the staged read moves a safetensors file onto the device, by lanes and chunk size (warm page cache).

``python -m benchmarks.read_lanes FILE [FILE ...] [--device cuda] [--lanes 1,2,4,8] [--chunks-mib 16,32,64]
[--staging pinned,pageable] [--fresh-pinned] [--repeats 3] [--out DIR]``: each file is read once to warm the page
cache, then each (lanes, chunk, staging) `--repeats` times; the fastest run counts. `--fresh-pinned` empties
torch's cache of pinned host memory before each read, so each pays for pinning its buffers as a start's first
read does. Writes read_lanes.json/.md under --out. On the fast path the files are the views bundle's constants
and the safetensors copies of the LRM and the white-background UNet (`benchmarks/gpu_start_probes.sh`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def empty_host_cache() -> None:
    """torch's cached pinned host blocks released (its name varies across versions; a no-op without it)."""
    import torch

    for name in ("_host_emptyCache", "_accelerator_emptyHostCache"):
        if hasattr(torch._C, name):
            getattr(torch._C, name)()
            return


def timed_read(path: Path, device: Any, lanes: int, chunk_bytes: int, pinned: bool = True, fresh_pinned: bool = False) -> float:
    import torch

    from instantmesh.device_read import read_staged

    if fresh_pinned and device.type == "cuda":
        empty_host_cache()
    start = time.perf_counter()
    tensors = read_staged(path, device, chunk_bytes=chunk_bytes, lanes=lanes, pinned=pinned)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    del tensors
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lanes", default="1,2,4,8")
    parser.add_argument("--chunks-mib", default="16,32,64")
    parser.add_argument("--staging", default="pinned")
    parser.add_argument("--fresh-pinned", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu-h200"))
    args = parser.parse_args(argv)
    import torch

    from .common import machine, table, write_results

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the context, before any timing
    rows: list[dict[str, Any]] = []
    for path in args.files:
        size = path.stat().st_size
        timed_read(path, device, 1, 64 << 20)  # the page cache
        for staging in args.staging.split(","):
            for lanes in (int(v) for v in args.lanes.split(",")):
                for chunk_mib in (int(v) for v in args.chunks_mib.split(",")):
                    runs = [timed_read(path, device, lanes, chunk_mib << 20, staging == "pinned", args.fresh_pinned) for _ in range(args.repeats)]
                    rows.append({"file": path.name, "gb": size / 1e9, "staging": staging, "lanes": lanes, "chunk_mib": chunk_mib,
                                 "fresh_pinned": args.fresh_pinned, "seconds": min(runs), "gb_per_s": size / 1e9 / min(runs), "runs_s": runs})
                    print(rows[-1], flush=True)
    write_results(args.out, "read_lanes", {"machine": machine(), "device": str(device), "rows": rows})
    pinning = "pinned buffers made anew each read" if args.fresh_pinned else "pinned buffers reused"
    text = table(f"Staged read onto {device} ({machine().get('gpu', 'cpu')}), fastest of {args.repeats}, {pinning}",
                 ["file", "GB", "staging", "lanes", "chunk MiB", "seconds", "GB/s"],
                 [[r["file"], r["gb"], r["staging"], r["lanes"], r["chunk_mib"], r["seconds"], r["gb_per_s"]] for r in rows])
    print(text, flush=True)
    (args.out / "read_lanes.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
