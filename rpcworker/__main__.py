"""``python -m rpcworker``: serve the InstantMesh models (or the mock) on stdin/stdout."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from .backends import BACKENDS, create_backend
from .handles import DEFAULT_MAX_HANDLES, HANDLES_PER_BATCH
from .jobs import MAX_BATCH_WAIT_S
from .wire.messages import MAX_BATCH_LIMIT, MESH_LANE_CHOICES


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags end the worker with one line on stderr (the host quotes it in WorkerStartError)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"rpcworker: bad arguments: {message}\n")


DEFAULT_BATCH_WAIT_MS = 5.0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def batch_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BATCH_LIMIT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH_LIMIT}, got {value}")
    return value


def batch_wait_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text!r}") from None
    if not 0.0 <= value <= MAX_BATCH_WAIT_S * 1000:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_BATCH_WAIT_S * 1000:g} ms, got {text}")
    return value


def existing_directory(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="python -m rpcworker", description=__doc__)
    p.add_argument("--backend", choices=sorted(BACKENDS), default=os.environ.get("INSTANTMESH_RPC_BACKEND", "instantmesh"))
    p.add_argument("--mock", default="", metavar="OPTS", help="mock backend options, e.g. step_delay=0.01,oom_once=reconstruct")
    p.add_argument("--preset", default=None, help="instantmesh backend: 'official' (real weights) or 'tiny' (random, for demos/tests)")
    p.add_argument("--zero123plus", default=None, metavar="DIR", help="the sudo-ai/zero123plus-v1.2 diffusers folder")
    p.add_argument("--unet", default=None, metavar="FILE", help="InstantMesh white-background UNet (diffusion_pytorch_model.bin)")
    p.add_argument("--lrm", default=None, metavar="FILE", help="instant_mesh_large.ckpt (or base)")
    p.add_argument("--config", default=None, metavar="YAML", help="LRM config (default: instant-mesh-large)")
    p.add_argument("--view-size", type=positive_int, default=None, help="side of each generated view in px (default 320; tiny: 32)")
    p.add_argument(
        "--optimize",
        default=None,
        metavar="LIST",
        help="comma list of channels_last, compile (or none); default: channels_last,compile on CUDA, none on CPU",
    )
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument(
        "--max-handles", type=positive_int, default=None,
        help=f"views kept in memory for reconstruct (LRU; default {DEFAULT_MAX_HANDLES}, or {HANDLES_PER_BATCH} x --max-batch if more)",
    )
    p.add_argument("--output-root", type=existing_directory, default=None, metavar="DIR", help="refuse to write outputs outside this directory")
    p.add_argument(
        "--max-batch", type=batch_size, default=None,
        help="run up to N queued compatible generate_views requests as one batch (default: the backend's, 1 on CPU)",
    )
    p.add_argument(
        "--batch-wait-ms", type=batch_wait_ms, default=DEFAULT_BATCH_WAIT_MS,
        help=f"how long a batch waits to fill (default {DEFAULT_BATCH_WAIT_MS:g} ms)",
    )
    p.add_argument(
        "--mesh-lane", choices=MESH_LANE_CHOICES, default="auto",
        help="run reconstruct on a second executor, beside the diffusion of the next objects "
        "(auto: where the backend says it pays, i.e. on CUDA)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _no_batching(args: argparse.Namespace) -> str:
    return f"rpcworker: --max-batch {args.max_batch} cannot work: the {args.backend} backend does not batch generate_views (use --max-batch 1)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .server import claim_stdio, serve

    stream = claim_stdio()
    if args.backend == "instantmesh":
        from instantmesh.bytecode_cache import use_bytecode_cache
        from instantmesh.unused_packages import hide_unused_packages

        use_bytecode_cache()  # before torch is imported
        hide_unused_packages()
    try:
        backend = create_backend(args)
    except (ValueError, ImportError, OSError) as exc:
        print(f"rpcworker: cannot start the {args.backend} backend: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    from .backends.base import BatchingBackend
    from .backends.mock import MockBackend

    if (args.max_batch or 1) > 1 and not isinstance(backend, BatchingBackend):
        print(_no_batching(args), file=sys.stderr)
        return 2
    max_batch = args.max_batch or getattr(backend, "max_batch", 1)
    max_handles = args.max_handles or max(DEFAULT_MAX_HANDLES, HANDLES_PER_BATCH * max_batch)

    # The mock's write_delay holds finished outputs at their temporary path (to kill a worker mid-write).
    before_commit = backend.before_commit if isinstance(backend, MockBackend) else None
    mesh_lane = args.mesh_lane == "on" or (args.mesh_lane == "auto" and bool(getattr(backend, "mesh_lane_pays", False)))
    code = serve(
        stream, backend, max_handles=max_handles, output_root=args.output_root, log_level=args.log_level,
        before_commit=before_commit, max_batch=max_batch, batch_wait_s=args.batch_wait_ms / 1000, mesh_lane=mesh_lane,
    )
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
