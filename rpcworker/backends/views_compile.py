"""Compilation of the denoising step at load: the per-machine cache folder, and the warm-up that compiles.

The warm-up runs a few steps at every batch size requests will use (one object and a full batch), then one
decode of the views' latents, so no request ever compiles; each is timed into the backend's load phases.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from instantmesh.zero123plus.ahead_of_time import ahead_of_time_available, code_fingerprint
from instantmesh.zero123plus.speed import AheadOfTimeSetup, package_seconds

from ..wire.cache import cache_root, private_folder
from ..wire.messages import DEFAULT_GUIDANCE

log = logging.getLogger("rpcworker.instantmesh")

ROWS_PER_OBJECT = 2
"""UNet rows one object takes in a guided step (the unconditional and the conditional half)."""
WARMUP_STEPS = 3
"""Denoising steps run at load to compile: CUDA-graph trees warm up, record, then replay."""
TRACED_PACKAGES = ("diffusers", "transformers")
"""Libraries whose module code the packages are traced from (torch and the GPU key the cache folder itself)."""
PACKAGES_FOLDER = "packages"
"""The compile-cache folder's subfolder of AOTInductor packages (`compiled_ahead_of_time`)."""
ENV_PACKAGES_ON_CPU = "INSTANTMESH_RPC_PACKAGES_ON_CPU"
"""Tests only: ``1`` lets ``compile`` run on the CPU through the packages (no CUDA graphs), so that the tiny preset
builds, switches to and starts from them as a GPU worker does. Never set it for real work."""
BUILD_LOCK_NAME = "compile-build.lock"
"""The machine's one build of compiled views at a time (`build_lock_path`), in the cache root."""
BUNDLE_CHECK_PHASE = "views_bundle_check_s"
"""``load_phases``: checking the views bundle (manifest, sources, the constants file's record and header)."""
BUNDLE_READ_PHASE = "views_bundle_read_s"
"""``load_phases``: the bundle's constants onto the device and the pipeline made of packages (not yet loaded)."""
BUNDLE_WRITE_PHASE = "views_bundle_write_s"
"""``load_phases``: writing the bundle after a start that loaded the modules."""
WARMUP_DECODE_PHASE = "views_warmup_decode_s"
"""The ``load_phases`` name of the warm-up's decode (the compiled VAE decoder's compilation or cache load) and of
its 8-bit image, so that a request's first is not the first."""


def warmup_phase(step: int, batch: int = 1) -> str:
    """The ``load_phases`` name of warm-up step `step` (1-based) at `batch` objects (parts of views_optimize_s):
    views_warmup_step1_s ... for one object, views_warmup_batch4_step1_s ... for a batch of four."""
    return f"views_warmup_step{step}_s" if batch == 1 else f"views_warmup_batch{batch}_step{step}_s"


def compile_cache_for(
    device: torch.device, unet: Path, view_size: int, optimizations: Sequence[str]
) -> tuple[Path, dict[str, Any]]:
    """This machine's compile-cache folder for these weights and options, and its key (nothing is touched yet)."""
    from instantmesh.compile_cache import compile_cache_dir, compile_key

    stat = unet.stat()
    weights = {"unet": str(unet), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "view_size": view_size}
    key = compile_key(device, weights, sorted(optimizations))
    return compile_cache_dir(key, cache_root()), key


def use_compile_cache_at(folder: Path, key: dict[str, Any]) -> bool:
    """Points the compilers at `folder`; whether it already held artefacts (a start that loads what an earlier one
    compiled). Imports Inductor: a start from a views bundle does without."""
    from instantmesh.compile_cache import use_compile_cache

    reused = use_compile_cache(folder, key)
    log.info("compile cache %s (%s)", folder, "reused" if reused else "new")
    return reused


def compiled_ahead_of_time(folder: Path, device: torch.device) -> AheadOfTimeSetup | None:
    """Where the step and decoder are AOTInductor packages: on CUDA with a torch that loads them the way
    `ahead_of_time` does (a second start loads them without tracing). None: torch.compile, its caches in `folder`."""
    if not ahead_of_time_available():
        return None
    if device.type == "cpu" and packages_on_cpu():
        return AheadOfTimeSetup(
            folder / PACKAGES_FOLDER, device, cuda_graphs=False, fingerprint=views_code_fingerprint()
        )
    if device.type != "cuda":
        return None
    return AheadOfTimeSetup(folder / PACKAGES_FOLDER, device, fingerprint=views_code_fingerprint())


def packages_on_cpu() -> bool:
    """The tests' switch (`ENV_PACKAGES_ON_CPU`) is on."""
    return os.environ.get(ENV_PACKAGES_ON_CPU) == "1"


def build_lock_path() -> Path:
    """The lock file every build of compiled views on this machine holds while it builds (fcntl.flock), in the
    private cache root, so that workers of a pool and concurrent starts never compile the same package twice."""
    return private_folder(cache_root()) / BUILD_LOCK_NAME


def views_from_bundle(
    zero123plus: Path,
    whitebg_unet: Path,
    ahead: AheadOfTimeSetup,
    dtype: torch.dtype,
    row_counts: Sequence[int],
    phases: dict[str, float],
) -> Any | None:
    """The views from their packages alone when `ahead`'s folder holds a valid bundle (`views_bundle`), else None.
    Its packages load at the warm-up; a missing one raises `PackageMissing` there."""
    from instantmesh.zero123plus.views_bundle import describe_sources, pipeline_from_bundle, valid_manifest

    start = time.perf_counter()
    manifest = valid_manifest(ahead.folder, describe_sources(zero123plus, whitebg_unet), ahead.fingerprint, dtype)
    phases[BUNDLE_CHECK_PHASE] = time.perf_counter() - start
    if manifest is None:
        return None
    start = time.perf_counter()
    pipeline = pipeline_from_bundle(ahead.folder, manifest, zero123plus, ahead, dtype, row_counts)
    if ahead.device.type == "cuda":
        torch.cuda.synchronize(ahead.device)
    phases[BUNDLE_READ_PHASE] = time.perf_counter() - start
    return pipeline


def save_views_bundle(
    pipeline: Any, zero123plus: Path, whitebg_unet: Path, ahead: AheadOfTimeSetup, phases: dict[str, float]
) -> bool:
    """Write the bundle of a pipeline whose networks all ran as packages, for the next start; False (logged) when
    it cannot be written (a part fell back to torch.compile, a read-only or full disk)."""
    from instantmesh.zero123plus.views_bundle import describe_sources, write_views_bundle

    start = time.perf_counter()
    try:
        write_views_bundle(pipeline, ahead.folder, describe_sources(zero123plus, whitebg_unet), ahead.fingerprint)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("no views bundle for the next start: %s", exc)
        return False
    phases[BUNDLE_WRITE_PHASE] = time.perf_counter() - start
    return True


def views_code_fingerprint() -> str:
    """The libraries whose modules the packages trace and our own views code (`ahead_of_time.code_fingerprint`)."""
    import instantmesh.zero123plus as views

    return code_fingerprint(TRACED_PACKAGES, list(Path(views.__file__).parent.glob("*.py")))


def warm_up(
    pipeline: Any, view_size: int, batches: Sequence[int], phases: dict[str, float], synchronize: Callable[[], None]
) -> None:
    """A few white-image steps at each batch size, each step timed into `phases` (names from `warmup_phase`): the
    first holds the encoders, the trace and the compilation or its cache load; later ones the CUDA-graph runs.
    The last step's time tells the compiled step what one call costs at that size (to pad or split batches)."""
    from PIL import Image

    white = Image.new("RGB", (view_size, view_size), (255, 255, 255))
    for count in batches:
        clock = [time.perf_counter()]

        def step_done(step: int, total: int, count: int = count, clock: list[float] = clock) -> None:
            synchronize()
            now = time.perf_counter()
            phases[warmup_phase(step, count)] = now - clock[0]
            clock[0] = now

        with torch.inference_mode():
            latents = pipeline.generate_batch(
                [white] * count,
                list(range(count)),
                num_inference_steps=WARMUP_STEPS,
                guidance_scale=DEFAULT_GUIDANCE,
                width=2 * view_size,
                height=3 * view_size,
                output_type="latent",
                progress=[step_done] + [None] * (count - 1),
                steps_ahead=0,
            )
        step_seconds = getattr(pipeline.fast_step, "step_seconds", None)
        if step_seconds is not None:  # the last warm-up step replays the compiled step: what a request's step costs
            step_seconds[ROWS_PER_OBJECT * count] = phases[warmup_phase(WARMUP_STEPS, count)]
    if isinstance(latents[0], BaseException):
        raise latents[0]
    start = time.perf_counter()
    with torch.inference_mode():
        pipeline.postprocess(
            pipeline.decode_latents(latents[0]), "pil"
        )  # one object at a time: one shape for every batch
    synchronize()
    phases[WARMUP_DECODE_PHASE] = time.perf_counter() - start
    phases.update(package_seconds(pipeline))
