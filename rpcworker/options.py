"""The worker's command-line flags, parsed once into `WorkerOptions` (a msgspec Struct) that the backends and the
serve loop take whole.

argparse keeps the flags' names, help and one-line errors; each range is declared once, in the Struct's field
types (the wire's where it has one, e.g. `MaxBatch`), and the flags' checks are made from those declarations.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Annotated, Literal, NoReturn, TypeVar, get_args

import msgspec
from msgspec import Meta, Struct

from .queued_inputs import DEFAULT_MAX_QUEUED_INLINE_MIB
from .wire.messages import MESH_LANE_CHOICES, PRESET_CHOICES, Device, MaxBatch, MeshLane, Preset

DEFAULT_MAX_HANDLES = 16
"""Views kept for reconstruct when --max-handles is not given (and --max-batch is at most a third of it)."""
HANDLES_PER_BATCH = 3
"""--max-handles is at least this many times --max-batch by default: a host filling the mesh lane keeps three
batches of objects in flight (one reconstructing, one in diffusion, one queued behind it)."""
MAX_BATCH_WAIT_S = 1.0
"""The longest ``--batch-wait-ms`` may make a job wait for company."""

BackendName = Literal["instantmesh", "mock"]
CompileBuild = Literal["behind", "at-load"]
"""``--compile-build``: build the compiled views behind eager serving (the default), or inside ``load``."""
LogLevel = Literal["debug", "info", "warning", "error"]
ViewSize = Annotated[int, Meta(ge=1)]
MaxHandles = Annotated[int, Meta(ge=1)]
MaxQueuedInlineMib = Annotated[int, Meta(ge=1)]
BatchWaitMs = Annotated[float, Meta(ge=0.0, le=MAX_BATCH_WAIT_S * 1000)]

ENV_BACKEND = "INSTANTMESH_RPC_BACKEND"
DEFAULT_BATCH_WAIT_MS = 5.0


class WorkerOptions(Struct, frozen=True, forbid_unknown_fields=True):
    """What ``python -m rpcworker`` was asked for; None: the backend's default."""

    backend: BackendName = "instantmesh"
    mock: str = ""
    """The mock backend's options, e.g. ``step_delay=0.01,oom_once=reconstruct``."""
    preset: Preset = "official"
    zero123plus: str | None = None
    unet: str | None = None
    lrm: str | None = None
    config: str | None = None
    weights_root: str | None = None
    """The folder whose ``instantmesh/ckpts/`` and ``ckpts/`` are searched for the weights (None: the working
    directory); the host passes its own working directory."""
    view_size: ViewSize | None = None
    optimize: str | None = None
    """A comma list of speed options (``none`` for none)."""
    device: Device | None = None
    max_handles: MaxHandles | None = None
    max_queued_inline_mib: MaxQueuedInlineMib = DEFAULT_MAX_QUEUED_INLINE_MIB
    """Back-pressure: the MiB of inline images queued requests may hold before more are refused with busy."""
    output_root: str | None = None
    max_batch: MaxBatch | None = None
    batch_wait_ms: BatchWaitMs = DEFAULT_BATCH_WAIT_MS
    mesh_lane: MeshLane = "auto"
    compile_build: CompileBuild = "behind"
    log_level: LogLevel = "info"

    def optimizations(self) -> tuple[str, ...] | None:
        """``--optimize`` as a tuple (``none`` and empty items dropped); None when not given."""
        if self.optimize is None:
            return None
        return tuple(o for o in self.optimize.split(",") if o and o != "none")


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags end the worker with one line on stderr (the host quotes it in WorkerStartError)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"rpcworker: bad arguments: {message}\n")


Number = TypeVar("Number", int, float)


def bounded(annotation: object, parse: Callable[[str], Number], unit: str = "") -> Callable[[str], Number]:
    """An argparse type that reads a number and holds it to the ``Meta`` bounds of `annotation`."""
    meta = next(m for m in get_args(annotation)[1:] if isinstance(m, Meta))
    low, high = meta.ge, meta.le

    def read(text: str) -> Number:
        try:
            value = parse(text)
        except ValueError:
            what = "a whole number" if parse is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if unit and low is not None and high is not None:
            if not low <= value <= high:  # also refuses nan
                raise argparse.ArgumentTypeError(f"must be {low:g}..{high:g} {unit}, got {text}")
        elif low is not None and not value >= low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        elif high is not None and not value <= high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return read


def existing_directory(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(
        prog="python -m rpcworker", description="Serve the InstantMesh models (or the mock) on stdin/stdout."
    )
    p.add_argument(
        "--backend", choices=sorted(get_args(BackendName)), default=os.environ.get(ENV_BACKEND, "instantmesh")
    )
    p.add_argument(
        "--mock", default="", metavar="OPTS", help="mock backend options, e.g. step_delay=0.01,oom_once=reconstruct"
    )
    p.add_argument(
        "--preset",
        choices=PRESET_CHOICES,
        default="official",
        help="instantmesh backend: 'official' (real weights; missing ones end the worker, the default), "
        "'tiny' (random, for demos/tests) or 'auto' (official if found, else tiny)",
    )
    p.add_argument("--zero123plus", default=None, metavar="DIR", help="the sudo-ai/zero123plus-v1.2 diffusers folder")
    p.add_argument(
        "--unet", default=None, metavar="FILE", help="InstantMesh white-background UNet (diffusion_pytorch_model.bin)"
    )
    p.add_argument("--lrm", default=None, metavar="FILE", help="instant_mesh_large.ckpt (or base)")
    p.add_argument("--config", default=None, metavar="YAML", help="LRM config (default: instant-mesh-large)")
    p.add_argument(
        "--weights-root",
        default=None,
        metavar="DIR",
        help="search DIR/instantmesh/ckpts and DIR/ckpts for the weights (default: the working directory)",
    )
    p.add_argument(
        "--view-size",
        type=bounded(ViewSize, int),
        default=None,
        help="side of each generated view in px (default 320; tiny: 32)",
    )
    p.add_argument(
        "--optimize",
        default=None,
        metavar="LIST",
        help="comma list of channels_last, compile (or none); default: channels_last,compile on CUDA, none on CPU",
    )
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument(
        "--max-handles",
        type=bounded(MaxHandles, int),
        default=None,
        help=f"views kept in memory for reconstruct (LRU; default {DEFAULT_MAX_HANDLES}, or {HANDLES_PER_BATCH} x --max-batch if more)",
    )
    p.add_argument(
        "--max-queued-inline-mib",
        type=bounded(MaxQueuedInlineMib, int),
        default=DEFAULT_MAX_QUEUED_INLINE_MIB,
        metavar="MIB",
        help="refuse (busy) a request whose inline image would take the bytes held by queued requests past this "
        f"(default {DEFAULT_MAX_QUEUED_INLINE_MIB})",
    )
    p.add_argument(
        "--output-root",
        type=existing_directory,
        default=None,
        metavar="DIR",
        help="refuse to write outputs outside this directory",
    )
    p.add_argument(
        "--max-batch",
        type=bounded(MaxBatch, int),
        default=None,
        help="run up to N queued compatible generate_views requests as one batch (default: the backend's, 1 on CPU)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=bounded(BatchWaitMs, float, "ms"),
        default=DEFAULT_BATCH_WAIT_MS,
        help=f"how long a batch waits to fill (default {DEFAULT_BATCH_WAIT_MS:g} ms)",
    )
    p.add_argument(
        "--mesh-lane",
        choices=MESH_LANE_CHOICES,
        default="auto",
        help="run reconstruct on a second executor, beside the diffusion of the next objects "
        "(auto: where the backend says it pays, i.e. on CUDA)",
    )
    p.add_argument(
        "--compile-build",
        choices=get_args(CompileBuild),
        default="behind",
        help="with the compile option and no compiled views on this machine yet: serve eagerly at once and build "
        "them in a process beside (behind, the default), or build them inside load first (at-load)",
    )
    p.add_argument("--log-level", default="info", choices=get_args(LogLevel))
    return p


def parse_worker_options(argv: Sequence[str] | None = None) -> WorkerOptions:
    """The flags as `WorkerOptions`; a bad flag exits with one line on stderr."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    try:
        return msgspec.convert(vars(namespace), WorkerOptions)
    except msgspec.ValidationError as exc:  # e.g. an INSTANTMESH_RPC_BACKEND that names no backend
        parser.error(str(exc))
