"""Compilation of the views at load: the per-machine cache folder, the views bundle, and the warm-up that compiles.

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

from instantmesh.zero123plus.networks.ahead_of_time import code_fingerprint
from instantmesh.zero123plus.networks.choice import compile_route
from instantmesh.zero123plus.networks.compiled import CompiledNetworks
from instantmesh.zero123plus.networks.packaged import PackagedNetworks, PackageSetup

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


def compiled_ahead_of_time(folder: Path, device: torch.device) -> PackageSetup | None:
    """Where the networks are AOTInductor packages (`choice.compile_route`): on CUDA with a torch that loads them
    the way `ahead_of_time` does (on the CPU, without CUDA graphs, only with the tests' switch `packages_on_cpu`).
    None: `torch.compile`, its caches in `folder`."""
    if compile_route() != "packaged":
        return None
    if device.type == "cpu" and packages_on_cpu():
        return PackageSetup(folder / PACKAGES_FOLDER, device, cuda_graphs=False, fingerprint=views_code_fingerprint())
    if device.type != "cuda":
        return None
    return PackageSetup(folder / PACKAGES_FOLDER, device, fingerprint=views_code_fingerprint())


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
    setup: PackageSetup,
    dtype: torch.dtype,
    row_counts: Sequence[int],
    phases: dict[str, float],
) -> Any | None:
    """The pipeline on packaged networks alone when `setup`'s folder holds a valid bundle (`networks.bundle`) whose
    step ran at every one of `row_counts`, else None. Its packages load at the warm-up; a missing one raises
    `PackageUnavailable` there."""
    from instantmesh.zero123plus.loading import read_views_config
    from instantmesh.zero123plus.networks.bundle import describe_sources, networks_from_bundle, valid_manifest
    from instantmesh.zero123plus.pipeline import Zero123PlusPipeline

    start = time.perf_counter()
    manifest = valid_manifest(setup.folder, describe_sources(zero123plus, whitebg_unet), setup.fingerprint, dtype)
    phases[BUNDLE_CHECK_PHASE] = time.perf_counter() - start
    if manifest is None:
        return None
    if not set(row_counts) <= set(manifest.notes.row_counts):
        log.info(
            "views bundle in %s not used: its step runs %s rows, this start needs %s",
            setup.folder,
            manifest.notes.row_counts,
            sorted(row_counts),
        )
        return None
    start = time.perf_counter()
    networks = networks_from_bundle(setup.folder, manifest, setup, dtype, row_counts)
    pipeline = Zero123PlusPipeline(read_views_config(zero123plus), networks)
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
    phases[BUNDLE_READ_PHASE] = time.perf_counter() - start
    return pipeline


def save_views_bundle(
    pipeline: Any, zero123plus: Path, whitebg_unet: Path, setup: PackageSetup, phases: dict[str, float]
) -> bool:
    """Write the bundle of a pipeline on packaged networks made from the modules, for the next start; False (logged)
    when it cannot be written (other networks, a read-only or full disk)."""
    from instantmesh.zero123plus.networks.bundle import describe_sources, write_views_bundle

    start = time.perf_counter()
    try:
        if not isinstance(pipeline.networks, PackagedNetworks):
            raise ValueError("the views do not run on packages: no bundle")
        write_views_bundle(
            pipeline.networks, setup.folder, describe_sources(zero123plus, whitebg_unet), setup.fingerprint
        )
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("no views bundle for the next start: %s", exc)
        return False
    phases[BUNDLE_WRITE_PHASE] = time.perf_counter() - start
    return True


def views_code_fingerprint() -> str:
    """The libraries whose modules the packages trace and our own views code, its networks included
    (`ahead_of_time.code_fingerprint`)."""
    import instantmesh.zero123plus as views

    return code_fingerprint(TRACED_PACKAGES, list(Path(views.__file__).parent.rglob("*.py")))


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
        failed = next((result for result in latents if isinstance(result, BaseException)), None)
        if failed is not None:  # e.g. a package that cannot run here, met while conditioning
            raise failed
        networks = pipeline.networks
        if isinstance(networks, (CompiledNetworks, PackagedNetworks)):  # the last warm-up step replays the compiled
            # step: what a request's step costs at this size
            networks.batched.step_seconds[ROWS_PER_OBJECT * count] = phases[warmup_phase(WARMUP_STEPS, count)]
    start = time.perf_counter()
    with torch.inference_mode():
        pipeline.postprocess(
            pipeline.decode_latents(latents[0]), "pil"
        )  # one object at a time: one shape for every batch
    synchronize()
    phases[WARMUP_DECODE_PHASE] = time.perf_counter() - start
    if isinstance(pipeline.networks, PackagedNetworks):
        phases.update(pipeline.networks.seconds())
