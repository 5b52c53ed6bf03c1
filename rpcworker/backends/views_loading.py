"""Loading the views warm: which networks (`instantmesh.zero123plus.networks`) the pipeline runs on, and their warm-up.

- No ``compile`` option: the eager modules (channels_last where asked).
- ``compile`` with torch 2.4 to 2.10: the modules, then `CompiledNetworks` (torch.compile), warmed up.
- ``compile`` with torch >= 2.11 (`choice.compile_route`): the views bundle's packages alone when the bundle is valid
  (neither diffusers nor transformers, nor Inductor, is imported); else the modules, then `PackagedNetworks` built
  from them (or loaded), warmed up, and the bundle written for the next start.

A first start that builds behind (`views_behind`) serves on `ViewsLoad.eager` (the modules, channels_last) meanwhile.

Each falls back whole, never per network: a bundle whose packages do not all run gives way to the modules, and
packages that cannot be built or loaded here give way to the eager modules (logged with the reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from instantmesh.zero123plus.networks.ahead_of_time import PackageUnavailable
from instantmesh.zero123plus.networks.compiled import CompiledNetworks
from instantmesh.zero123plus.networks.packaged import PackagedNetworks, PackageSetup

from ..wire.errors import ModelNotLoaded
from ..wire.messages import VIEWS_COMPILING, VIEWS_FROM_PACKAGES, VIEWS_WRITING_BUNDLE
from .model_files import ModelFiles
from .views_compile import (
    ROWS_PER_OBJECT,
    compile_cache_for,
    compiled_ahead_of_time,
    save_views_bundle,
    use_compile_cache_at,
    views_from_bundle,
    warm_up,
)

log = logging.getLogger("rpcworker.instantmesh")

Report = Callable[[str], None]
"""A progress message of the load (the backend sends it as a ``load`` notification)."""


@dataclass
class ViewsLoad:
    """One load of the views; its phases go into `phases` (the backend's ``load_phases``)."""

    files: ModelFiles
    device: torch.device
    dtype: torch.dtype
    optimizations: Sequence[str]
    batch_sizes: Sequence[int]
    """The batches (objects) the step is compiled for."""
    phases: dict[str, float]
    synchronize: Callable[[], None]
    free_memory: Callable[[], None]
    """Frees what a failed packaged start left on the device (the backend's own freeing)."""
    before_warm_up: Callable[[], None] = lambda: None
    """Called once the weights are read, before any package runs or CUDA graph is captured (the backend waits
    there for the mesh it loads beside the views)."""

    def run(self, report: Report) -> Any:
        setup = None
        if "compile" in self.optimizations:
            folder, key = compile_cache_for(
                self.device, self.files.whitebg_unet, self.files.view_size, self.optimizations
            )
            setup = compiled_ahead_of_time(folder, self.device)
            if setup is not None:
                pipeline = self.from_bundle(setup, report)
                if pipeline is not None:
                    return pipeline
            reused = use_compile_cache_at(folder, key)
            report(VIEWS_COMPILING + (" (cached)" if reused else " (first start on this machine: minutes)"))
        pipeline = self.read_modules()
        self.before_warm_up()
        start = time.perf_counter()
        self.optimize(pipeline, setup)
        self.synchronize()
        self.phases["views_optimize_s"] = time.perf_counter() - start
        if isinstance(pipeline.networks, PackagedNetworks) and setup is not None:
            report(VIEWS_WRITING_BUNDLE)
            save_views_bundle(pipeline, self.files.zero123plus, self.files.whitebg_unet, setup, self.phases)
        return pipeline

    def optimize(self, pipeline: Any, setup: PackageSetup | None) -> None:
        """The options on the pipeline's eager networks: channels_last in place, then ``compile``'s networks swapped
        in and warmed up (packages when `setup` says where, else torch.compile); packages that cannot run here leave
        the eager networks in place."""
        eager = pipeline.networks
        start = time.perf_counter()
        self.channels_last(pipeline)
        self.phases["views_optimize_setup_s"] = time.perf_counter() - start
        if "compile" not in self.optimizations:
            return
        if setup is None:
            pipeline.use(CompiledNetworks(eager, self.row_counts()))
            self.warm_up(pipeline)
            return
        pipeline.use(PackagedNetworks.from_modules(eager, setup, self.row_counts()))
        try:
            self.warm_up(pipeline)
            return
        except PackageUnavailable as exc:
            log.warning("the views' packages cannot run here (%s): the views run eagerly", exc)
        pipeline.use(eager)  # the packages' memory goes with them (outside the handler, which holds their frames)
        self.free_memory()

    def channels_last(self, pipeline: Any) -> None:
        """The eager networks in channels_last where the options ask for it (in place, then handed to the pipeline
        again so that nothing computed before is kept)."""
        if "channels_last" in self.optimizations:
            pipeline.networks.to_channels_last()
            pipeline.use(pipeline.networks)
        self.synchronize()

    def eager(self) -> Any:
        """The views on the eager networks with the speed options but ``compile`` (channels_last): what requests run
        while the compiled packages are built behind (`views_behind`)."""
        pipeline = self.read_modules()
        self.before_warm_up()
        start = time.perf_counter()
        self.channels_last(pipeline)
        self.phases["views_optimize_s"] = time.perf_counter() - start
        return pipeline

    def for_batch_sizes(self, batch_sizes: Sequence[int]) -> ViewsLoad:
        """The same load with the step for `batch_sizes` alone (its phases shared)."""
        return replace(self, batch_sizes=list(batch_sizes))

    def row_counts(self) -> list[int]:
        return [ROWS_PER_OBJECT * count for count in self.batch_sizes]

    def warm_up(self, pipeline: Any) -> None:
        warm_up(pipeline, self.files.view_size, self.batch_sizes, self.phases, self.synchronize)

    def read_modules(self) -> Any:
        """The pipeline on the eager networks from the weight files, the text encoder freed once the empty prompt is
        encoded."""
        from instantmesh.zero123plus import load_zero123plus

        start = time.perf_counter()
        try:
            pipeline = load_zero123plus(
                self.files.zero123plus,
                self.files.whitebg_unet,
                device=self.device,
                dtype=self.dtype,
                timings=self.phases,
            )
        except (OSError, ValueError) as exc:
            raise ModelNotLoaded(
                f"cannot load Zero123++ from {self.files.zero123plus} with {self.files.whitebg_unet}: {exc}",
                {"model": "views", "searched": [str(self.files.zero123plus), str(self.files.whitebg_unet)]},
            ) from exc
        start_prompt = time.perf_counter()
        pipeline.networks.free_text_encoder()
        self.synchronize()
        self.phases["views_prompt_s"] = time.perf_counter() - start_prompt
        self.phases["views_read_s"] = time.perf_counter() - start
        return pipeline

    def from_bundle(self, setup: PackageSetup, report: Report) -> Any:
        """The views on the bundle's packages alone, warmed up; None (the modules load instead) without a valid
        bundle, or when a package of it does not run."""
        start = time.perf_counter()
        try:
            pipeline = views_from_bundle(
                self.files.zero123plus, self.files.whitebg_unet, setup, self.dtype, self.row_counts(), self.phases
            )
            if pipeline is None:
                return None
            self.phases["views_read_s"] = time.perf_counter() - start
            report(VIEWS_FROM_PACKAGES)
            self.before_warm_up()
            start = time.perf_counter()
            self.warm_up(pipeline)
            self.synchronize()
            self.phases["views_optimize_s"] = time.perf_counter() - start
        except (PackageUnavailable, OSError, ValueError, RuntimeError) as exc:
            log.warning(
                "the views' packaged start failed (%s: %s): loading the modules instead", type(exc).__name__, exc
            )
            pipeline = None
            self.free_memory()
        return pipeline
