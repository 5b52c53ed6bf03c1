"""Modules compiled ahead of time (AOTInductor packages), once per machine, loaded without tracing.

torch.compile traces the UNet with dynamo at every worker start, seconds even with every kernel in the cache
(see docs/benchmarks.md, 'Packages instead of torch.compile'). An AOTInductor package is the compiled module
itself (a shared library and its kernels), built once per input shapes into the machine's compile-cache folder.
The weights stay out of it: a loaded package is pointed at the module's own parameters (user-managed constants),
so there is no second copy on the GPU and a package is a few megabytes. On CUDA each package is captured once in
a CUDA graph (the reference pass is launch-bound).

A package is trusted only with its record; one that cannot be built, or was built but does not load here (the
record keeps that verdict), raises `PackageUnavailable`: the views then run without packages, all of them
(`rpcworker.backends.views_loading`), never a mix.

A package's library does not link libstdc++ itself, so its C++ symbols may bind to the template copies libtorch
exports before libstdc++'s own, and where those differ a package crashes at load (inside the std::regex of its
device-string parser). `use_global_libstdcxx` puts libstdc++ in the global scope first, as LD_PRELOAD would.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rpcworker.wire.cache import private_folder

from .graphed_call import GraphedCall
from .package_files import build_package, intact_record

log = logging.getLogger("instantmesh.ahead_of_time")

AOT_MIN_TORCH = (2, 11)
"""AOTInductor packages with the constants left out and bound to the module's own tensors (user-managed), a
single-threaded runner CUDA graphs can capture, and the C++ loader's signature `open_package` calls (measured
on torch 2.11 with CUDA and 2.13 on the CPU; earlier torch runs torch.compile)."""
LIBSTDCXX = "libstdc++.so.6"
PACKAGE_MODEL = "model"
"""The model's name inside a package (aoti_compile_and_package's default)."""


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def ahead_of_time_available() -> bool:
    """This torch builds and loads AOTInductor packages the way `AheadOfTime` uses them."""
    return version_tuple(torch.__version__) >= AOT_MIN_TORCH


Shapes = tuple[tuple[tuple[int, ...], str], ...]
Call = Callable[..., Any]
"""A module's call: tensors in, a tensor or a tuple of tensors out."""


def input_shapes(tensors: Sequence[torch.Tensor]) -> Shapes:
    return tuple((tuple(t.shape), str(t.dtype).removeprefix("torch.")) for t in tensors)


def package_name(prefix: str, shapes: Shapes, fingerprint: str = "") -> str:
    """``step-<hash of the input shapes, dtypes and the code's fingerprint>``: one package per shape set and code,
    nothing reused across them."""
    digest = hashlib.sha256(json.dumps([shapes, fingerprint]).encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


def code_fingerprint(packages: Sequence[str], sources: Sequence[Path]) -> str:
    """The installed versions of `packages` and a hash of the `sources`: what a compiled module's code depends on
    beyond torch and the GPU (which key the cache folder). A package traced from other code is never loaded."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    hasher = hashlib.sha256()
    for source in sorted(sources):
        hasher.update(source.name.encode() + b"\0" + source.read_bytes())
    return ", ".join(f"{name} {installed(name)}" for name in packages) + f", code {hasher.hexdigest()[:16]}"


def use_global_libstdcxx() -> None:
    """libstdc++ into the process's global symbol scope (or promoted there), before any package is loaded."""
    ctypes.CDLL(LIBSTDCXX, mode=os.RTLD_GLOBAL)


class PackageRunner:
    """A loaded package called like the module it was built from: tensors in, its tensor (or tuple of them) out."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.loader.boxed_run(list(inputs))  # boxed: the runner may free the list it is handed
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def get_constant_fqns(self) -> list[str]:
        return self.loader.get_constant_fqns()

    def load_constants(self, constants: dict[str, torch.Tensor]) -> None:
        """Bind `constants` (by FQN; every one the package wants) as they are: no copy (user-managed)."""
        self.loader.load_constants(constants, False, True, True)  # not the inactive buffer; check all; user-managed


def open_package(package: Path, device: torch.device) -> PackageRunner:
    """The package's runner, straight from torch's C++ loader, not yet bound to any weights (`bind_constants`).

    torch's own `aoti_load_package` first compares the package's CPU vector ISA with this machine's, and finding
    the machine's builds and probes a test library per ISA, each probe a Python process of its own: most of a second
    start (see docs/benchmarks.md, 'Packages instead of torch.compile'). For a GPU package the check that matters
    is the compute capability, made here from the package's metadata.
    """
    use_global_libstdcxx()
    loader_type: Any = torch._C._aoti.AOTIModelPackageLoader
    if device.type == "cuda":
        metadata = loader_type.load_metadata_from_package(str(package), PACKAGE_MODEL)
        major, minor = torch.cuda.get_device_capability(device)
        built_for, here = metadata.get("AOTI_COMPUTE_CAPABILITY"), str(major * 10 + minor)
        if built_for != here:
            raise ValueError(f"compiled package {package} is for compute capability {built_for}, this GPU has {here}")
    single_threaded = device.type == "cuda"  # the runner's locks and events cannot be captured in a CUDA graph
    return PackageRunner(loader_type(str(package), PACKAGE_MODEL, single_threaded, 1, -1))


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's parameters and buffers by FQN: what its packages' constants are named after."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def bind_constants(compiled: PackageRunner, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Point `compiled` at `tensors` (a module's, or a bundle's; they must outlive it); returns the FQNs bound."""
    wanted = compiled.get_constant_fqns()
    missing = [name for name in wanted if name not in tensors]
    if missing:
        raise ValueError(f"the package wants constants that are not there: {missing[:3]}")
    compiled.load_constants({name: tensors[name] for name in wanted})
    return wanted


class PackageUnavailable(RuntimeError):
    """No package runs here for these shapes: none is intact and there is no module to build one from (a start from
    the views bundle), or it cannot be built, or it does not load with this torch. The message says which."""


class AheadOfTime:
    """`module` compiled per input shapes into `folder`, a drop-in for ``torch.compile(module)``: the first call at
    a shape set loads its package (or builds it), so callers make those calls in ``load``, never in a request.

    `pool` is the CUDA graph memory pool shared by the pipeline's graphs (they run one after another on one
    stream); None: no CUDA graphs. Without a module (a start from the views bundle) `constants` are the weights
    bound. Shapes whose package cannot run here raise `PackageUnavailable`.
    """

    def __init__(
        self,
        module: torch.nn.Module | None,
        folder: Path,
        prefix: str,
        device: torch.device,
        pool: Any = None,
        configs: dict[str, Any] | None = None,
        fingerprint: str = "",
        constants: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if module is None and constants is None:
            raise ValueError(f"{prefix}: packages without a module need their constants")
        self.module, self.folder, self.prefix, self.device, self.pool = module, folder, prefix, device, pool
        self.constants = constants
        self.fingerprint = fingerprint
        """What the module's code depends on (`code_fingerprint`): part of every package's name."""
        self.configs = dict(configs or {})
        self.calls: dict[Shapes, Call] = {}
        self.built: list[str] = []
        """Packages compiled by this process (the others were loaded from the folder)."""
        self.loaded: list[str] = []
        """Packages running (built or loaded), in the order of their first calls."""
        self.bound: set[str] = set()
        """The FQNs of the constants the running packages were bound to."""
        self.seconds: dict[str, float] = {}
        """Where preparing the packages went, summed over shape sets: ``<prefix>_package_<phase>_s`` for the
        phases record (its record's check), build (with load_check, the child's load), load, bind (the weights),
        first_call, graph (warm-up calls, capture)."""

    def __call__(self, *inputs: torch.Tensor) -> Any:
        shapes = input_shapes(inputs)
        call = self.calls.get(shapes)
        if call is None:
            call = self.calls[shapes] = self._prepare(shapes, inputs)
        return call(*inputs)

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._add_seconds(phase, time.perf_counter() - start)

    def _add_seconds(self, phase: str, seconds: float) -> None:
        name = f"{self.prefix}_package_{phase}_s"
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def _weights(self) -> Mapping[str, torch.Tensor]:
        if self.module is not None:
            return module_tensors(self.module)
        assert self.constants is not None
        return self.constants

    def _prepare(self, shapes: Shapes, inputs: Sequence[torch.Tensor]) -> Call:
        private_folder(self.folder)
        package = self.folder / f"{package_name(self.prefix, shapes, self.fingerprint)}.pt2"
        with self._timed("record"):
            record = intact_record(package)
        if record is None:
            if self.module is None:
                raise PackageUnavailable(f"no intact compiled package {package} for {self.prefix} at {shapes}")
            if package.exists():
                log.warning("compiled package %s does not match its record: building it again", package)
            try:
                with self._timed("build"):
                    record = build_package(self.module, inputs, package, self.configs, self.device)
            except Exception as exc:  # export or compilation failed: nothing is written, the next start tries again
                raise PackageUnavailable(
                    f"compiled package {package} could not be built ({type(exc).__name__}: {str(exc)[:300]})"
                ) from exc
            self.built.append(package.name)
            self._add_seconds("load_check", record.notes.load_check_s)  # a fresh process's load, within build
        if not record.notes.loads:
            raise PackageUnavailable(f"compiled package {package} does not load with this torch (its record says so)")
        with self._timed("load"):
            compiled = open_package(package, self.device)
        with self._timed("bind"):
            self.bound.update(bind_constants(compiled, self._weights()))
            call: Call = compiled
        self.loaded.append(package.name)
        with self._timed("first_call"):  # the kernels' modules load, cuDNN and cuBLAS make their plans
            call(*inputs)
        if self.pool is None:
            return call
        with self._timed("graph"):
            return GraphedCall(call, inputs, self.pool)
