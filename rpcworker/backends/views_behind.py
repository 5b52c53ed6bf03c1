"""Serve at once, compile behind: how the real backend's views start with ``compile``, and when they switch.

With the packaged route (`views_compile.compiled_ahead_of_time`) a start that finds a valid views bundle for its
batch sizes starts from it, as before (state ``ready``). Otherwise, by default (``--compile-build behind``), the
views load eagerly (channels_last, no compile) and requests run at once, while `compile_build` builds the
packages in a child process, stage by stage (one object, then the full batch); a bundle of the first stage alone
(an earlier build stopped between its stages) is served from at once while the rest is built. After each stage the
session runs `switch` as a job of its own, between requests, which loads the stage's packages, checks them and
switches.
``--compile-build at-load`` (``prepare``) waits for the same build inside ``load`` instead, its progress as
``load`` notifications of stage ``compile``, then starts from the bundle it wrote.

Without the packaged route (torch older than 2.11) the views compile inside ``load`` through torch.compile, as
before: its caches live in the worker's own process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..options import CompileBuild
from ..wire.errors import ModelNotLoaded
from ..wire.messages import VIEWS_BUILDING, VIEWS_SERVING_EAGER, CompileStatus
from .compile_behind import BackgroundBuild, CompileTracker
from .compile_build import BuildEvent, BuildSpec, build_stages
from .views_compile import compile_cache_for, compiled_ahead_of_time
from .views_loading import ViewsLoad
from .views_switch import CompiledUnusable, compiled_views

log = logging.getLogger("rpcworker.instantmesh")

Progress = Callable[[str, int, int, str], None]
"""A ``load`` request's progress (stage, step, total, message)."""
BEHIND_NICENESS = 10
"""The CPU niceness a build behind serving runs at: its tracing and its pool of compiler processes (one per core)
yield the cores to the worker's requests, whose eager views are bound by the CPU launching their kernels. A build
in ``load`` (``prepare``) keeps the worker's niceness: nothing is served meanwhile."""


class ViewsBehind:
    """The compiled views of one backend: which start the views make, the build behind and its status, and the
    switch. `watch` tells the session of each change of status and when a switch waits to be run."""

    def __init__(self, when: CompileBuild = "behind") -> None:
        self.when = when
        self.tracker = CompileTracker("off")
        self.switch_wanted: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._build: BackgroundBuild | None = None
        self._stages: list[list[int]] = []
        self._pending: list[int] | None = None
        """The batch sizes of the newest stage whose bundle is written and not switched to yet."""
        self._load: ViewsLoad | None = None
        self._ahead: Any = None
        self._built_in_all = 0
        self._foreground_ended = threading.Event()

    def watch(self, listener: Callable[[CompileStatus], None], switch_wanted: Callable[[], None]) -> None:
        self.tracker.listen(listener)
        self.switch_wanted = switch_wanted

    @property
    def build_pid(self) -> int | None:
        """The build process's id while one was started (tests end it to see a failed build)."""
        return None if self._build is None else self._build.pid

    # ------------------------------------------------------------------ the start

    def start_views(self, load: ViewsLoad, report: Callable[[str], None], progress: Progress) -> Any:
        """The views `load` makes, and the build behind them when they start eagerly (see the module)."""
        sizes = list(load.batch_sizes)
        if "compile" not in load.optimizations:
            return load.run(report)
        folder, _ = compile_cache_for(load.device, load.files.whitebg_unet, load.files.view_size, load.optimizations)
        ahead = compiled_ahead_of_time(folder, load.device)
        if ahead is None:  # torch.compile inside load, in this process
            pipeline = load.run(report)
            self.tracker.update(state="ready", batch_sizes=sizes, message="compiled inside load (torch.compile)")
            return pipeline
        pipeline = load.from_bundle(ahead, report)
        if pipeline is not None:
            self.tracker.update(state="ready", batch_sizes=sizes, message="started from the compiled packages")
            return pipeline
        self._load, self._ahead = load, ahead
        if self.when == "at-load":
            return self._build_in_load(load, ahead, report, progress)
        first = build_stages(max(sizes))[0]
        if first != sizes:  # an earlier build that ended after its first stage: serve that, build the rest
            pipeline = load.for_batch_sizes(first).from_bundle(ahead, report)
            if pipeline is not None:
                self.tracker.update(batch_sizes=first)  # before the build reports that stage: no switch to it
                self._start_build(load)
                self.tracker.update(message=f"requests of one object run compiled; building for {sizes}")
                return pipeline
        report(VIEWS_SERVING_EAGER)
        pipeline = load.eager()
        self._start_build(load)
        return pipeline

    def _build_in_load(self, load: ViewsLoad, ahead: Any, report: Callable[[str], None], progress: Progress) -> Any:
        report(VIEWS_BUILDING)
        self._foreground_ended.clear()

        def forward(status: CompileStatus) -> None:
            if status.state in ("waiting", "building"):
                progress("compile", status.done, status.total, status.message)

        self.tracker.listen(forward)
        try:
            self._start_build(load)
            self._foreground_ended.wait()
        finally:
            self.tracker.unlisten(forward)
        status = self.tracker.snapshot()
        if status.state == "failed":
            raise ModelNotLoaded(f"the compiled views could not be built: {status.message}", {"model": "views"})
        pipeline = load.from_bundle(ahead, report)
        if pipeline is None:
            self.tracker.update(state="failed", message="the build's packages do not start the views")
            raise ModelNotLoaded(
                "the compiled views were built but do not start; see the worker's log", {"model": "views"}
            )
        self.tracker.update(state="ready", batch_sizes=list(load.batch_sizes), message="built and started from them")
        return pipeline

    def _start_build(self, load: ViewsLoad) -> None:
        """Starts the build process, unless one runs already (a load after an unload)."""
        with self._lock:
            if self._build is not None and not self._build.ended.is_set():
                return
            self._stages = build_stages(max(load.batch_sizes))
            files = load.files
            spec = BuildSpec(
                str(files.zero123plus),
                str(files.whitebg_unet),
                str(files.lrm),
                str(files.lrm_config),
                files.label,
                files.weights,
                files.view_size,
                str(load.device),
                list(load.optimizations),
                self._stages,
                niceness=BEHIND_NICENESS if self.when == "behind" else 0,
            )
            self._build = BackgroundBuild(spec, self._on_event)
        self.tracker.begin()
        self.tracker.update(state="waiting", done=0, total=0, message="starting the build of the compiled views")
        self._build.start()

    # ------------------------------------------------------------------ the build's report

    def _on_event(self, event: BuildEvent) -> None:
        if event.event in ("waiting", "building"):
            self.tracker.update(state=event.event, message=event.message)
        elif event.event == "package":
            self.tracker.update(
                done=event.done, total=event.total, message=f"building for batches of {event.batch_sizes}"
            )
        elif event.event == "stage":
            self._built_in_all += event.built
            served = self.tracker.snapshot().batch_sizes
            self.tracker.update(built=self._built_in_all, done=event.done, total=event.total)
            if self.when == "behind" and list(event.batch_sizes) != served:  # nothing new to switch to otherwise
                with self._lock:
                    self._pending = list(event.batch_sizes)
                self.switch_wanted()
        elif event.event == "done":
            self._foreground_ended.set()
        else:
            log.warning("the compiled views could not be built: %s; requests stay eager", event.message)
            self.tracker.update(state="failed", message=event.message)
            self._foreground_ended.set()

    # ------------------------------------------------------------------ the switch

    def switch(self, current: Any, free: Callable[[], None]) -> Any | None:
        """The compiled networks to run from now on, loaded and checked against `current` (the pipeline requests
        ran until now; the caller hands them to it, `views_switch.switch_to_compiled`); None when there is nothing
        to switch to, or when they fail (state ``failed``, the reason in the message; requests go on with
        `current`). Run between requests (the session's switch job)."""
        with self._lock:
            sizes, self._pending = self._pending, None
        if sizes is None or current is None or self._load is None:
            return None
        last = sizes == self._stages[-1]
        self.tracker.update(state="checking", message=f"loading and checking the compiled views for batches of {sizes}")
        try:
            compiled, difference = compiled_views(self._load, self._ahead, sizes, current, self._load.synchronize)
        except Exception as exc:  # whatever went wrong, requests go on as they ran; status says why, in one line
            free()
            reason = str(exc) if isinstance(exc, CompiledUnusable) else f"{type(exc).__name__}: {exc}"
            log.warning("the compiled views are not used: %s; requests stay eager", reason, exc_info=True)
            self.tracker.update(state="failed", message=" ".join(reason.split())[:500])
            return None
        log.info("requests run compiled for batches of %s (check: at most %d of 255 from before)", sizes, difference)
        self.tracker.update(
            state="ready" if last else "building",
            batch_sizes=sizes,
            message="requests run compiled"
            if last
            else f"requests of one object run compiled; building for {sizes_after(sizes, self._stages)}",
        )
        return compiled


def sizes_after(sizes: Sequence[int], stages: Sequence[Sequence[int]]) -> list[int]:
    """The batch sizes of the stage after `sizes`."""
    at = [list(s) for s in stages].index(list(sizes))
    return list(stages[min(at + 1, len(stages) - 1)])
