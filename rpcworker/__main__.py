"""``python -m rpcworker``: serve the InstantMesh models (or the mock) on stdin/stdout."""

from __future__ import annotations

import os
import sys

from .backends import create_backend
from .backends.model_files import WeightsMissing
from .options import DEFAULT_MAX_HANDLES, HANDLES_PER_BATCH, WorkerOptions, parse_worker_options
from .queued_inputs import MIB
from .wire.messages import WEIGHTS_MISSING_LINE


def _no_batching(options: WorkerOptions) -> str:
    return (
        f"rpcworker: --max-batch {options.max_batch} cannot work: the {options.backend} backend does not batch "
        "generate_views (use --max-batch 1)"
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_worker_options(argv)
    from .server import claim_stdio, serve

    stream = claim_stdio()
    if options.backend == "instantmesh":
        from instantmesh.bytecode_cache import use_bytecode_cache
        from instantmesh.unused_packages import hide_unused_packages

        use_bytecode_cache()  # before torch is imported
        hide_unused_packages()
    try:
        backend = create_backend(options)
    except WeightsMissing as exc:
        print(f"{WEIGHTS_MISSING_LINE}{exc}", file=sys.stderr)
        return 2
    except (ValueError, ImportError, OSError) as exc:
        print(f"rpcworker: cannot start the {options.backend} backend: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    from .backends.base import BatchingBackend
    from .backends.mock import MockBackend

    if (options.max_batch or 1) > 1 and not isinstance(backend, BatchingBackend):
        print(_no_batching(options), file=sys.stderr)
        return 2
    max_batch: int = getattr(backend, "max_batch", 1) if options.max_batch is None else options.max_batch
    max_handles = options.max_handles or max(DEFAULT_MAX_HANDLES, HANDLES_PER_BATCH * max_batch)

    # The mock's write_delay holds finished outputs at their temporary path (to kill a worker mid-write).
    before_commit = backend.before_commit if isinstance(backend, MockBackend) else None
    mesh_lane = options.mesh_lane == "on" or (
        options.mesh_lane == "auto" and bool(getattr(backend, "mesh_lane_pays", False))
    )
    code = serve(
        stream,
        backend,
        max_handles=max_handles,
        output_root=options.output_root,
        log_level=options.log_level,
        before_commit=before_commit,
        max_batch=max_batch,
        batch_wait_s=options.batch_wait_ms / 1000,
        mesh_lane=mesh_lane,
        max_queued_inline_bytes=options.max_queued_inline_mib * MIB,
    )
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
