"""``python -m host web``: the browser page (``host.faces.web``) over one warm worker, built from the same worker
options as ``batch`` and ``session`` (``add_worker_options``, ``make_worker``).

It binds to 127.0.0.1, so only this machine reaches it; ``--host`` exposes it, with a warning, since the page has no
login and lets anyone who reaches it run the models and write meshes into ``--out``. Problems found before the worker
starts (no gradio, a port in use, an ``--out`` that cannot be written) are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
import time
from pathlib import Path
from typing import Any

from rpcworker.wire.errors import RpcError

from ..api.progress import ProgressPrinter
from ..worker.errors import HostError, WorkerStartError
from .arguments import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageProblem, add_worker_options, make_worker
from .checks import check_cuda_before_start, check_device, check_output_dir
from .display import shown
from .objects import ensure_loaded

LOCAL_HOST = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 7860
"""gradio's usual port."""
INSTALL_HINT = "pip install 'instantmesh-rpc[web]' (scripts/setup.sh installs it into .venvs/host)"


def add_web_command(commands: Any) -> None:
    """The ``web`` subcommand, on the CLI's subparsers."""
    web = commands.add_parser(
        "web",
        help="a browser page on 127.0.0.1: drop images, watch them, turn their meshes in 3D, download OBJ/GLB/PLY",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    web.add_argument(
        "--host",
        default=LOCAL_HOST,
        metavar="ADDRESS",
        help=f"address to listen on (default {LOCAL_HOST}: this machine only); another exposes the page, which has "
        "no login, to whoever can reach it",
    )
    web.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    web.add_argument("--out", default="outputs/web", metavar="DIR", help="where meshes go (default: outputs/web)")
    add_worker_options(web)


def _port(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a whole number, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {number}")
    return number


def check_gradio() -> None:
    """The page needs gradio (the ``web`` extra), which needs Python 3.10+: refused at start, in one line."""
    if sys.version_info < (3, 10):
        raise UsageProblem(
            f"the web command needs Python 3.10 or newer (gradio does); this host runs Python {sys.version.split()[0]}"
        )
    if importlib.util.find_spec("gradio") is None:
        raise UsageProblem(f"the web command needs gradio in the host's Python ({sys.executable}): {INSTALL_HINT}")


def exposure_warning(host: str) -> str | None:
    """The warning for a page served beyond this machine (None on a loopback address)."""
    if host in LOOPBACK_NAMES:
        return None
    return (
        f"warning: --host {host} serves the page beyond this machine: anyone who can reach it can run the models "
        "and write meshes into --out, and there is no login"
    )


def claim_port(host: str, port: int) -> int:
    """The port to serve on, checked free now (0: one the system picks), so a port in use is one line at start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise UsageProblem(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose --port N (0 picks a free one)"
        ) from None


def run_web(args: argparse.Namespace) -> int:
    warning = exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    check_gradio()
    out_dir = Path(args.out).expanduser().resolve()
    check_output_dir(out_dir)
    port = claim_port(args.host, args.port)
    worker = make_worker(args)
    try:
        check_cuda_before_start(worker, args.device, args.backend or ("mock" if args.mock else "instantmesh"))
        print(f"starting the worker ({worker.command_line}) ...", flush=True)
        began = time.monotonic()
        info = worker.info
        check_device(worker, args.device)
        print(f"worker ready in {time.monotonic() - began:.1f} s: pid {info.pid}, device {info.device}")
        print(f"model: {info.model_label}", flush=True)
        loaded = ensure_loaded(worker, ProgressPrinter())
        if loaded:
            print("models loaded: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in loaded.items()))
        from ..faces.web import serve

        serve(
            worker,
            host=args.host,
            port=port,
            out_dir=out_dir,
            on_ready=lambda url: print(f"web page: {url}  (meshes go to {shown(out_dir)}; Ctrl-C stops)", flush=True),
        )
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the page stops, as SIGTERM is
    except WorkerStartError as exc:
        print(f"error: the worker could not start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (HostError, RpcError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        worker.close()
    print("stopped: objects still running were cancelled and their files removed; the worker is shut down")
    return EXIT_OK
