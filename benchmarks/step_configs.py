"""Does Inductor's autotuning make the Zero123++ step's packages (AOTInductor + CUDA graphs) faster?

Why: an H200 profile put 4.66 ms of the 20.8 ms step in matmuls and 4.49 ms in Inductor's fused kernels, the parts
autotuning can change (docs/benchmarks.md, 'The compiled step's time').

``python -m benchmarks.step_configs --weights DIR --out DIR [--reuse CACHE_ROOT] [--configs default,max_autotune]
[--device cuda] [--steps 75] [--repeats 3] [--work /tmp/step_configs]``

Per config, in a child process: the step's two packages (one object) built with its Inductor settings into a cache
root of its own, WORK/<config>, through the worker's build (`ViewsLoad.run`, as `compile_build` runs it), the other
packages taken from --reuse (else WORK/default); then the views start from that bundle as a worker's do, and one
object's `generate_views` is timed (median of --repeats after a warm-up). WORK is kept, so a call cut off by a time
limit resumes (built packages and Inductor's autotune cache stay there; a config with a result is not run again).
OUT/step_configs.json is written after each config; a table is printed last.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import Any

from .common import synthetic_object, table, write_results

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "autotune_gemm": {"max_autotune_gemm": True, "max_autotune_gemm_backends": "ATEN,TRITON"},
    "coordinate_descent": {"coordinate_descent_tuning": True},
    "max_autotune": {"max_autotune": True},
}
NOT_ON_CPU = {
    "coordinate_descent": "coordinate-descent tuning tunes Triton kernels; the CPU's kernels are C++",
    "max_autotune": "the CPU's C++ GEMM template packs weights into constants of its own, which a package bound to "
    "the module's weights lacks ('the package wants constants that are not there', torch 2.13)",
}
"""Settings that do not apply to the CPU smoke test (recorded as skipped there, with the reason)."""
STEP_PARTS = ("reference", "main")
REUSED_PARTS = ("decode", "encode", "image")
SEED, GUIDANCE = 42, 4.0
RESULT, BUILD, VIEWS = "result.json", "build.json", "views.npy"
ARGUMENTS = ("steps", "device", "repeats")
"""A result stands for a later call with the same of these arguments."""
log = logging.getLogger("benchmarks.step_configs")


@contextmanager
def step_settings(settings: dict[str, Any], seconds_file: Path) -> Iterator[None]:
    """`settings` patched into Inductor while the step's packages are built (and passed as their inductor_configs);
    each such build's seconds added to `seconds_file` as soon as it ends (a later call may finish the other)."""
    import torch._inductor.config as inductor_config

    from instantmesh.zero123plus.networks import ahead_of_time

    original = ahead_of_time.build_package

    def build(module: Any, inputs: Any, package: Path, configs: dict[str, Any], device: Any) -> Any:
        if package.name.split("-")[0] not in STEP_PARTS:
            return original(module, inputs, package, configs, device)
        print(f"step_configs: building {package.name} with {settings or 'defaults'}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        with inductor_config.patch(settings):
            record = original(module, inputs, package, {**configs, **settings}, device)
        seconds = json.loads(seconds_file.read_text()) if seconds_file.exists() else {}
        seconds[package.name] = time.perf_counter() - start
        seconds_file.write_text(json.dumps(seconds))
        return record

    ahead_of_time.build_package = build
    try:
        yield
    finally:
        ahead_of_time.build_package = original


def reuse_files(roots: list[Path], packages: Path, cache: Path) -> list[str]:
    """From the cache roots `roots`: the decoder's, encoder's and image embedding's packages (with their records)
    into `packages`, and the UNet's safetensors copy into `cache` (not converted again), hard-linked or copied."""
    from rpcworker.wire.cache import private_folder

    placed = []
    for root in roots:
        wanted = [(f, packages) for folder in root.rglob("packages") if folder.is_dir() for f in folder.iterdir()]
        wanted = [(f, dest) for f, dest in wanted if f.name.split("-")[0] in REUSED_PARTS and ".pt2" in f.name]
        converted = [root / "safetensors", *root.glob("*/safetensors")]  # a cache root, or a WORK folder of them
        wanted += [(f, cache / "safetensors") for folder in converted for f in folder.glob("[!.]*")]
        for file, dest in wanted:
            target = dest / file.name
            if file.is_file() and not target.exists() and file.parent.resolve() != dest.resolve():
                private_folder(dest)
                try:
                    os.link(file, target)  # its record is checked by hash once (the link moved its ctime)
                except OSError:
                    shutil.copy2(file, target)
                placed.append(file.name)
    return placed


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One config, in this (child) process: build (or find) its packages, start from its bundle, time the views."""
    root = args.work / name
    os.environ["INSTANTMESH_RPC_CACHE"] = str(root)
    if args.device == "cpu":
        os.environ["INSTANTMESH_RPC_PACKAGES_ON_CPU"] = "1"  # the tests' switch: packages without CUDA graphs
    import numpy as np
    import torch
    from PIL import Image

    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.compile_build import counting_packages
    from rpcworker.backends.instantmesh import CUDA_DEFAULT_OPTIMIZATIONS, InstantMeshBackend
    from rpcworker.backends.model_files import resolve_model_files
    from rpcworker.backends.views_compile import compile_cache_for, compiled_ahead_of_time

    from .sessions import official_options

    files = resolve_model_files(official_options(args.weights))
    backend = InstantMeshBackend(files, args.device, CUDA_DEFAULT_OPTIMIZATIONS, max_batch=1)  # the worker's backend
    device = backend.device
    folder, _ = compile_cache_for(device, files.whitebg_unet, files.view_size, backend.optimizations)
    setup = compiled_ahead_of_time(folder, device)
    if setup is None:
        raise RuntimeError(f"no AOTInductor packages on {device} with torch {torch.__version__}")
    reuse = [args.reuse] if args.reuse else [args.work / "default"] if name != "default" else []
    reused = reuse_files([r for r in reuse if r.is_dir()], setup.folder, root)
    built: list[str] = []
    load = backend.views_load()  # batch sizes [1], the backend's phases, synchronize and free
    start = time.perf_counter()
    with step_settings(CONFIGS[name], root / BUILD), counting_packages(lambda n, b: built.append(n) if b else None):
        pipeline = load.run(lambda message: None)  # builds what is missing and writes the bundle, as a build does
    run_s = time.perf_counter() - start
    del pipeline
    load.free_memory()
    backend.load(["views"], SilentContext())  # a worker's start: from the bundle when it is whole
    if backend.compile_status().state != "ready":
        raise RuntimeError("the views did not start from the bundle's packages (see the warnings)")
    sync = load.synchronize
    image = Image.open(synthetic_object(args.work / "object.png", 0))

    def timed() -> tuple[float, Any]:
        sync()
        start = time.perf_counter()
        generated = backend.generate_views(image, SEED, args.steps, GUIDANCE, SilentContext())
        sync()
        return time.perf_counter() - start, np.asarray(generated.grid)

    timed()
    runs = [timed() for _ in range(args.repeats)]
    np.save(root / VIEWS, runs[-1][1])
    views_s = statistics.median(s for s, _ in runs)
    build_seconds = json.loads((root / BUILD).read_text()) if (root / BUILD).exists() else {}
    return {
        "settings": CONFIGS[name],
        **{key: getattr(args, key) for key in ARGUMENTS},
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": str(torch.__version__),
        "build_s": sum(build_seconds.values()) if build_seconds else None,
        "step_package_build_s": build_seconds,
        "built_this_call": built,
        "reused_files": reused,
        "views_load_run_s": run_s,
        "load_phases": backend.load_phases,
        "views_s": views_s,
        "views_runs_s": [s for s, _ in runs],
        "step_ms": views_s / args.steps * 1000,
        "repeats_max_abs_diff": int(np.abs(runs[0][1].astype(np.int16) - runs[-1][1]).max()),
    }


def finished(path: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """A config's result for these arguments from an earlier call, if it finished."""
    if not path.exists():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    same = all(result.get(key) == getattr(args, key) for key in ARGUMENTS)
    return result if same and "error" not in result else None


def diff_vs_default(args: argparse.Namespace, name: str, result: dict[str, Any]) -> int | None:
    """Max abs difference of the config's views from the default's (0..255), where both finished with these args."""
    import numpy as np

    if "views_s" not in result or finished(args.work / "default" / RESULT, args) is None:
        return None
    default, own = (np.load(args.work / each / VIEWS).astype(np.int16) for each in ("default", name))
    return int(np.abs(default - own).max())


def child_command(args: argparse.Namespace, name: str) -> list[str]:
    forwarded = {"weights": args.weights, "out": args.out, "work": args.work, "device": args.device}
    forwarded |= {"steps": args.steps, "repeats": args.repeats, "child": name, "reuse": args.reuse}
    flags = [x for key, value in forwarded.items() if value is not None for x in (f"--{key}", str(value))]
    return [sys.executable, "-m", "benchmarks.step_configs", *flags]


def child_main(args: argparse.Namespace) -> int:
    from rpcworker.backends.compile_build import watch_parent

    watch_parent()  # a call cut off by its time limit takes this build with it
    logging.basicConfig(level=logging.WARNING, format="step_configs %(levelname)s %(name)s: %(message)s")
    warnings = BufferingHandler(10_000)  # the log's warnings, kept for the result of a config that fails
    warnings.setLevel(logging.WARNING)
    logging.getLogger().addHandler(warnings)
    try:
        result = run_config(args.child, args)
    except Exception as exc:
        log.exception("config %s failed", args.child)
        said = [record.getMessage()[:400] for record in warnings.buffer[-3:]]
        result = {"device": args.device, "error": f"{type(exc).__name__}: {exc}"[:1500], "warnings": said}
    (args.work / args.child / RESULT).write_text(json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="a benchmarks.make_weights folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/step_configs"))
    parser.add_argument("--reuse", type=Path, help="an earlier run's cache root (e.g. /tmp/first_run_cache)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/step_configs"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    if args.child:
        return child_main(args)
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    args.work.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(args.work / "inductor"))  # before any child imports torch
    results: dict[str, Any] = {}
    for name in names:
        path = args.work / name / RESULT
        result: dict[str, Any] | None = finished(path, args)
        if result is None and args.device == "cpu" and name in NOT_ON_CPU:
            result = {"skipped": NOT_ON_CPU[name]}
        if result is None:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.unlink(missing_ok=True)
            start = time.perf_counter()
            child = subprocess.run(child_command(args, name), check=False)
            result = json.loads(path.read_text()) if path.exists() else {"error": f"child exit {child.returncode}"}
            result["call_s"] = time.perf_counter() - start
        results[name] = result
        for each, done in results.items():
            done["max_abs_diff_vs_default"] = diff_vs_default(args, each, done)
        write_results(args.out, "step_configs", {"steps": args.steps, "device": args.device, "configs": results})
    rows = [
        [name, r.get("build_s"), r.get("views_s"), r.get("step_ms"), r.get("max_abs_diff_vs_default")]
        + [str(r.get("error") or r.get("skipped") or "")[:100]]
        for name, r in results.items()
    ]
    headers = ["config", "build_s", "views_s (median)", "step_ms", "max_abs_diff_vs_default", "note"]
    print(table(f"Step configs ({args.device}, {args.steps} steps)", headers, rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
