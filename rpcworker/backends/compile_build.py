"""The build of the compiled views, in a process of its own: ``python -m rpcworker.backends.compile_build SPEC``.

The worker starts it (`compile_behind.BackgroundBuild`) so that compiling, minutes of tracing and of C++ and
Triton compilation that hold the GIL, never takes the thread that serves requests. It runs the build a worker
ran inside ``load`` before protocol 1.6 (`ViewsLoad.run` with the packages: the modules, the speed options, the
warm-up that builds each package, then the views bundle), once per stage of batch sizes, in the order they pay:
one object first, then the full ``--max-batch``. Each stage ends with a valid views bundle for its batch sizes,
which the worker loads and switches to.

One build per machine: the whole build holds an exclusive ``fcntl.flock`` on the lock file in the private cache
root (`views_compile.build_lock_path`). A build that finds the lock taken says so and waits; then each stage
starts from the bundle or the packages another process built (`AheadOfTime` loads an intact package, never
builds it again), so a package is compiled once per machine.

It reports on its own stdout, one `BuildEvent` per line (JSON). Before anything else it keeps a private copy of
fd 1 for them and points fd 1 at stderr, as the worker does (protocol.md, section 1): what compilers print goes
to stderr. It exits (code 3) when its parent, the worker, is gone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

log = logging.getLogger("rpcworker.compile_build")

BUILD_MODULE = "rpcworker.backends.compile_build"
PARENT_POLL_S = 0.5
"""How often the build looks whether the worker that started it is still there."""
EXIT_PARENT_GONE = 3
EXIT_FAILED = 1

BuildEventKind = Literal["waiting", "building", "package", "stage", "done", "failed"]


class BuildSpec(msgspec.Struct, frozen=True):
    """What to build: the worker's weight files, device, options and the stages of batch sizes."""

    zero123plus: str
    whitebg_unet: str
    lrm: str
    lrm_config: str
    label: str
    weights: Literal["official", "tiny"]
    view_size: int
    device: str
    optimizations: list[str]
    stages: list[list[int]]
    """Batch sizes (objects) per stage, e.g. [[1], [1, 8]]: each stage's sizes include the earlier ones."""
    niceness: int = 0
    """Added to the build's CPU niceness before anything else (`os.nice`), and so to its compiler workers'."""


class BuildEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of the build's report. waiting: for another process's build (the lock); building: the lock is
    held; package: `done` of `total` packages of the stage ready; stage: the bundle for `batch_sizes` is written
    (`built`: packages compiled in it); done: all stages (`built` in all); failed: `message` says why."""

    event: BuildEventKind
    done: int = 0
    total: int = 0
    batch_sizes: list[int] = msgspec.field(default_factory=list)
    built: int = 0
    message: str = ""


def build_stages(max_batch: int) -> list[list[int]]:
    """Batch 1 first (what one object at a time needs), then the full batch with it."""
    return [[1]] if max_batch <= 1 else [[1], [1, max_batch]]


def packages_per_stage(batch_sizes: Sequence[int]) -> int:
    """Packages a stage needs: the step's passes once per batch size, and the other parts once each."""
    from instantmesh.zero123plus.networks.packaged import PACKAGED_PARTS, constant_group

    step = [prefix for prefix in PACKAGED_PARTS if constant_group(prefix) == "step"]  # a package per batch size
    return len(PACKAGED_PARTS) - len(step) + len(step) * len(set(batch_sizes))


Report = Callable[[BuildEvent], None]


def reporter(stream: BinaryIO) -> Report:
    encoder = msgspec.json.Encoder()
    lock = threading.Lock()

    def report(event: BuildEvent) -> None:
        with lock:
            stream.write(encoder.encode(event) + b"\n")
            stream.flush()

    return report


def claim_report_stream() -> BinaryIO:
    """A private copy of fd 1 for the report; fd 1 and sys.stdout then go to stderr."""
    stream = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def watch_parent() -> None:
    """Ends this process when the worker that started it is gone (the build is then of use to nobody now; the
    packages it finished stay in the cache for the next build)."""
    parent = os.getppid()

    def poll() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=poll, name="parent-watch", daemon=True).start()


@contextmanager
def machine_build_lock(report: Report) -> Iterator[None]:
    """The machine's build lock, held for the block; waits (saying so) while another process holds it."""
    from .views_compile import build_lock_path

    descriptor = os.open(build_lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(BuildEvent("waiting", message="another process builds compiled views on this machine: waiting"))
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


@contextmanager
def counting_packages(on_ready: Callable[[str, bool], None]) -> Iterator[None]:
    """Calls ``on_ready(name, built)`` as each package of `AheadOfTime` is ready (built here, or loaded), by
    wrapping its preparation for the block: the build's progress, counted where the packages are made."""
    from instantmesh.zero123plus.networks.ahead_of_time import AheadOfTime

    original = AheadOfTime._prepare

    def prepare(self: AheadOfTime, shapes: Any, inputs: Any) -> Any:
        before = len(self.built)
        call = original(self, shapes, inputs)
        on_ready(f"{self.prefix}{shapes}", len(self.built) > before)
        return call

    AheadOfTime._prepare = prepare  # type: ignore[method-assign]
    try:
        yield
    finally:
        AheadOfTime._prepare = original  # type: ignore[method-assign]


def build(spec: BuildSpec, report: Report) -> None:
    """Every stage of `spec`, under the machine's build lock; raises with the reason when one fails."""
    import gc

    import torch

    from .model_files import ModelFiles
    from .views_compile import compile_cache_for, compiled_ahead_of_time, views_code_fingerprint
    from .views_loading import ViewsLoad

    files = ModelFiles(
        Path(spec.zero123plus),
        Path(spec.whitebg_unet),
        Path(spec.lrm),
        Path(spec.lrm_config),
        spec.label,
        spec.weights,
        spec.view_size,
    )
    device = torch.device(spec.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def free() -> None:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    folder, _ = compile_cache_for(device, files.whitebg_unet, files.view_size, spec.optimizations)
    ahead = compiled_ahead_of_time(folder, device)
    if ahead is None:
        raise ValueError(f"compiled packages cannot be built for {device} with torch {torch.__version__}")
    built_in_all = 0
    with machine_build_lock(report):
        report(BuildEvent("building", message="building the compiled views"))
        for sizes in spec.stages:
            built = build_stage(
                ViewsLoad(files, device, dtype, spec.optimizations, sizes, {}, synchronize, free), report
            )
            free()
            if not bundle_is_valid(files, ahead.folder, views_code_fingerprint(), dtype):
                raise RuntimeError(
                    "the views could not be built as packages (they fell back to the eager modules): no views "
                    "bundle was written; the worker's log says why"
                )
            built_in_all += built
            total = packages_per_stage(sizes)
            report(BuildEvent("stage", done=total, total=total, batch_sizes=sizes, built=built))
    report(BuildEvent("done", built=built_in_all))


def build_stage(load: Any, report: Report) -> int:
    """One stage: `load`'s views built (or loaded) with their packages and the bundle written; the packages built."""
    sizes = list(load.batch_sizes)
    total = packages_per_stage(sizes)
    ready: set[str] = set()
    built = 0

    def on_ready(name: str, was_built: bool) -> None:
        nonlocal built
        ready.add(name)
        built += was_built
        report(BuildEvent("package", done=min(len(ready), total), total=total, batch_sizes=sizes))

    with counting_packages(on_ready):
        pipeline = load.run(lambda message: log.info("%s", message))
    del pipeline
    return built


def bundle_is_valid(files: Any, folder: Path, fingerprint: str, dtype: Any) -> bool:
    from instantmesh.zero123plus.networks.bundle import describe_sources, valid_manifest

    return (
        valid_manifest(folder, describe_sources(files.zero123plus, files.whitebg_unet), fingerprint, dtype) is not None
    )


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def main(argv: Sequence[str]) -> int:
    report = reporter(claim_report_stream())
    watch_parent()
    logging.basicConfig(level=logging.INFO, format="compile-build %(levelname)s %(name)s: %(message)s")
    try:
        spec = msgspec.json.decode(argv[0], type=BuildSpec)
        if spec.niceness:
            os.nice(spec.niceness)
        build(spec, report)
    except Exception as exc:  # the worker reads the reason from the report and keeps serving eagerly
        log.exception("the build of the compiled views failed")
        report(BuildEvent("failed", message=one_line(exc)))
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    from instantmesh.bytecode_cache import use_bytecode_cache

    use_bytecode_cache()
    sys.exit(main(sys.argv[1:]))
