"""``prepare``: builds this machine's compiled views ahead (for images and CI), with a progress bar.

    instantmesh-rpc prepare                      # the GPU, the worker's default --max-batch (8)
    instantmesh-rpc prepare --max-batch 1 --device cuda:1

A worker's first start on a machine serves at once and builds them behind; after ``prepare`` every start finds
them built. It starts a worker whose ``load`` builds them (host.api.build_ahead) and waits until they are ready.
"""

from __future__ import annotations

import argparse
import sys

from ..api.build_ahead import CompiledViewsNotBuilt, build_compiled_views
from ..worker.errors import WorkerStartError
from .arguments import EXIT_FAILED, EXIT_OK, PYTHON_HELP, UsageProblem, cli_preset, max_batch_type
from .display import printable_lines

DESCRIPTION = __doc__
WORKER_LINE = "rpcworker: "
"""How the worker's one-line start failures begin (rpcworker.__main__)."""


def add_prepare_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prepare = commands.add_parser(
        "prepare",
        help="build this machine's compiled views ahead (images, CI), so that every start runs compiled at once",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument(
        "--python",
        metavar="ENV",
        help=PYTHON_HELP,
    )
    prepare.add_argument("--device", help="cuda or cuda:N (default: cuda)")
    prepare.add_argument(
        "--max-batch",
        type=max_batch_type,
        metavar="N",
        help="build for batches of 1 and N objects (default: the worker's, 8 on CUDA); use the workers' value",
    )
    prepare.add_argument(
        "--preset", choices=["official", "tiny", "auto"], help="weights (default auto: official if found)"
    )
    prepare.add_argument(
        "--optimize", metavar="LIST", help="the workers' --optimize (default: theirs, channels_last,compile on CUDA)"
    )
    prepare.add_argument("--startup-timeout", type=float, default=300.0, metavar="S", help="seconds to start (300)")


def run_prepare(args: argparse.Namespace) -> int:
    try:
        status = build_compiled_views(
            args.python,
            device=args.device,
            max_batch=args.max_batch,
            preset=cli_preset(args),
            optimize=args.optimize,
            startup_timeout=args.startup_timeout,
            progress=True,
        )
    except WorkerStartError as exc:
        raise UsageProblem(f"the worker could not start: {start_reason(exc)}") from None
    except CompiledViewsNotBuilt as exc:
        print(f"error: {printable_lines(exc)}", file=sys.stderr)
        return EXIT_FAILED
    made = f"{status.built} package(s) built" if status.built else "all were built already"
    sizes = ", ".join(map(str, status.batch_sizes))
    print(f"compiled views ready for batches of {sizes} ({made}; {status.seconds:.0f} s)")
    return EXIT_OK


def start_reason(exc: WorkerStartError) -> str:
    """The worker's own line saying why it did not start (``rpcworker: ...``, e.g. an option that cannot work),
    else the first line of the error."""
    said = [line for line in exc.stderr_tail.splitlines() if line.startswith(WORKER_LINE)]
    return said[-1].removeprefix(WORKER_LINE) if said else str(exc).splitlines()[0]
