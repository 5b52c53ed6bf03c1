"""AOTInductor packages on disk: built once, checked, and loaded once in a child process before they are used.

A package is trusted only with its record beside it (the cache's one record format, `rpcworker.wire.cache`: size,
SHA-256 and stamp, written after the package, both atomically, in the cache's private folder); a package that
fails the check is built again. Before it is published, a new package is loaded once in a child process: a
package that does not load there (a crash cannot be caught in the worker) is recorded as unusable
(`PackageNotes.loads`), and `ahead_of_time.AheadOfTime` raises `PackageUnavailable` for it at every start.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import torch

from rpcworker.wire.cache import (
    CacheMiss,
    CacheRecord,
    atomic_file,
    check_record,
    describe_files,
    record_path,
    write_record,
)

log = logging.getLogger("instantmesh.ahead_of_time")

PACKAGE_CONFIGS = {"aot_inductor.package_constants_in_so": False}
"""The weights are not copied into the package; `load_constants` binds the module's parameters instead."""
LOAD_CHECK_TIMEOUT_S = 120.0
"""The child process that loads a new package once (torch import + load); past it the package counts as unusable."""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
_LOAD_CHECK = (
    "import sys; sys.path.insert(0, sys.argv[3]); import pathlib, torch; "
    "from instantmesh.zero123plus.networks.ahead_of_time import open_package; open_package(pathlib.Path(sys.argv[1]), torch.device(sys.argv[2]))"
)


class PackageNotes(msgspec.Struct, frozen=True):
    """What a package's record keeps besides its file's facts: the load check's verdict and how long it took."""

    loads: bool
    load_check_s: float


PackageRecord = CacheRecord[PackageNotes]


def package_versions() -> dict[str, str]:
    """What a package's record must say it was built by (the name says the shapes and the code's fingerprint)."""
    return {"torch": str(torch.__version__)}


def intact_record(package: Path) -> PackageRecord | None:
    """The package's record, when the package is the file recorded when it was written (size, hash and stamp)."""
    try:
        return check_record(record_path(package), PackageRecord, package_versions())
    except CacheMiss as miss:
        if package.exists():
            log.info("compiled package %s: %s", package, miss)
        return None


def package_is_intact(package: Path) -> bool:
    return intact_record(package) is not None


def loads_in_a_child(package: Path, device: torch.device) -> bool:
    """The package loads in a fresh process (where a crash costs nothing)."""
    command = [sys.executable, "-c", _LOAD_CHECK, str(package), device.type, _PACKAGE_ROOT]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=LOAD_CHECK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        log.warning("compiled package %s: loading it took over %.0f s", package, LOAD_CHECK_TIMEOUT_S)
        return False
    if done.returncode != 0:
        log.warning(
            "compiled package %s does not load here (exit %d): %s", package, done.returncode, done.stderr.strip()[-300:]
        )
    return done.returncode == 0


def build_package(
    module: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    package: Path,
    configs: dict[str, Any],
    device: torch.device,
) -> PackageRecord:
    """Export `module` at these inputs, compile it with AOTInductor, load it once in a child process, and write the
    package and its record (with that check's verdict, ``loads``) atomically; returns the record."""
    import torch._inductor

    with torch.inference_mode(False), torch.no_grad():  # export cannot trace inference tensors
        exported = torch.export.export(module, tuple(t.clone() for t in inputs), strict=False)
    with atomic_file(package) as partial:
        torch._inductor.aoti_compile_and_package(
            exported, package_path=str(partial), inductor_configs={**configs, **PACKAGE_CONFIGS}
        )
        checked = time.perf_counter()
        loads = loads_in_a_child(partial, device)
        load_check_s = time.perf_counter() - checked
    record = PackageRecord(
        versions=package_versions(),
        files=describe_files(package.parent, [package.name]),
        notes=PackageNotes(loads, load_check_s),
    )
    write_record(record_path(package), record)
    return record
