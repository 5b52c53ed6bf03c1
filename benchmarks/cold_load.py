"""Worker starts that only load the models (no compile, no object), timed by phase, in fresh processes.

``python -m benchmarks.cold_load --weights DIR [--device cpu|cuda] [--dtype float16] [--starts 3] [--out DIR]``
(DIR from ``benchmarks.make_weights``). The starts share one empty cache folder, so the first one pays for
the safetensors copy of the white-background UNet and the later ones show a second start. The phases are
the backend's ``load_phases`` (names in rpcworker/backends/instantmesh.py) plus ``imports_s`` and the
``load_<model>_s`` totals. Compilation is left out: benchmarks.fast_path times it on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def child(weights: Path, device: str | None, dtype: str | None) -> dict[str, float]:
    """One start: imports, then both models loaded with no speed option."""
    phases: dict[str, float] = {}
    from instantmesh.bytecode_cache import use_bytecode_cache

    use_bytecode_cache()  # as the worker's entry does, before torch is imported
    t = time.perf_counter()
    import torch

    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files

    from .sessions import weight_args

    phases["imports_s"] = time.perf_counter() - t
    files = resolve_model_files(argparse.Namespace(**{"preset": "official", "config": None, "view_size": None, **weight_args(weights)}))
    backend = InstantMeshBackend(files, device, optimizations=())
    if dtype:  # e.g. float16 on the CPU, as CUDA loads it
        backend.dtype = getattr(torch, dtype)
    loads = backend.load(["views", "mesh"], SilentContext())
    phases.update(backend.load_phases)
    phases.update({f"load_{name}_s": seconds for name, seconds in loads.items()})
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="override the backend's dtype (float16 emulates CUDA's on a CPU)")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write cold_load.json here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("PHASES " + json.dumps(child(args.weights, args.device, args.dtype)), flush=True)
        return 0
    cache = Path(tempfile.mkdtemp(prefix="cold-load-cache-"))
    env = {**os.environ, "INSTANTMESH_RPC_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "benchmarks.cold_load", "--child", "--weights", str(args.weights)]
    cmd += [*(["--device", args.device] if args.device else []), *(["--dtype", args.dtype] if args.dtype else [])]
    starts: list[dict[str, Any]] = []
    for i in range(args.starts):
        t = time.perf_counter()
        done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("PHASES "))
        starts.append({"process_s": time.perf_counter() - t, "phases": json.loads(line[len("PHASES "):])})
        shown = ", ".join(f"{k} {v:.2f}" for k, v in starts[-1]["phases"].items())
        print(f"start {i + 1}: process {starts[-1]['process_s']:.2f} s; {shown}", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cold_load.json").write_text(json.dumps({"device": args.device, "dtype": args.dtype, "starts": starts}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
