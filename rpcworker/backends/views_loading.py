"""Loading the views warm: from a views bundle (the packages alone), or from the modules with the speed options.

A cached start on CUDA looks for the bundle first (`instantmesh.zero123plus.views_bundle`): it needs neither
diffusers nor transformers, nor Inductor. Without one, or when one of its packages does not run, the modules
load from the weight files, the options apply, the warm-up compiles (or loads) every package, and the bundle is
written for the next start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from instantmesh.zero123plus.speed import AheadOfTimeSetup, optimize_views

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
        ahead = None
        if "compile" in self.optimizations:
            folder, key = compile_cache_for(
                self.device, self.files.whitebg_unet, self.files.view_size, self.optimizations
            )
            ahead = compiled_ahead_of_time(folder, self.device)
            if ahead is not None:
                pipeline = self.from_bundle(ahead, report)
                if pipeline is not None:
                    return pipeline
            reused = use_compile_cache_at(folder, key)
            report(VIEWS_COMPILING + (" (cached)" if reused else " (first start on this machine: minutes)"))
        pipeline = self.read_modules()
        self.before_warm_up()
        start = time.perf_counter()
        optimize_views(pipeline, self.optimizations, row_counts=self.row_counts(), ahead=ahead)
        self.synchronize()
        self.phases["views_optimize_setup_s"] = time.perf_counter() - start
        if "compile" in self.optimizations:
            self.warm_up(pipeline)
        self.synchronize()
        self.phases["views_optimize_s"] = time.perf_counter() - start
        if ahead is not None:
            report(VIEWS_WRITING_BUNDLE)
            save_views_bundle(pipeline, self.files.zero123plus, self.files.whitebg_unet, ahead, self.phases)
        return pipeline

    def eager(self) -> Any:
        """The views from the modules with the speed options but `compile` (channels_last): what requests run while
        the compiled packages are built behind (`compile_behind`)."""
        pipeline = self.read_modules()
        self.before_warm_up()
        start = time.perf_counter()
        optimize_views(pipeline, [o for o in self.optimizations if o != "compile"])
        self.synchronize()
        self.phases["views_optimize_s"] = time.perf_counter() - start
        return pipeline

    def row_counts(self) -> list[int]:
        return [ROWS_PER_OBJECT * count for count in self.batch_sizes]

    def warm_up(self, pipeline: Any) -> None:
        warm_up(pipeline, self.files.view_size, self.batch_sizes, self.phases, self.synchronize)

    def read_modules(self) -> Any:
        """The pipeline's modules from the weight files, the text encoder freed once the empty prompt is encoded."""
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
        pipeline.free_text_encoder()
        self.synchronize()
        self.phases["views_prompt_s"] = time.perf_counter() - start_prompt
        self.phases["views_read_s"] = time.perf_counter() - start
        return pipeline

    def from_bundle(self, ahead: AheadOfTimeSetup, report: Report) -> Any:
        """The views from the packages alone, warmed up; None (the modules load instead) without a valid bundle, or
        when a package of it does not run."""
        from instantmesh.zero123plus.ahead_of_time import PackageMissing

        start = time.perf_counter()
        try:
            pipeline = views_from_bundle(
                self.files.zero123plus, self.files.whitebg_unet, ahead, self.dtype, self.row_counts(), self.phases
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
        except (PackageMissing, OSError, ValueError, RuntimeError) as exc:
            log.warning(
                "the views' packaged start failed (%s: %s): loading the modules instead", type(exc).__name__, exc
            )
            pipeline = None
            self.free_memory()
        return pipeline
