"""``python -m host web``: a browser page over one warm worker, served on 127.0.0.1 by gradio.

People drop images; each object shows its prepared input, its progress, the six views, an interactive 3D view of its
mesh and the OBJ/GLB/PLY downloads, and can be cancelled alone. One worker serves every browser session, and the
objects in flight together share its diffusion batches (``web_runner``). The CLI (``host.cli.web_command``) parses
the options, starts the worker and loads its models; this module serves the page until Ctrl-C, then cancels what is
still running (the cancelled objects' files are removed) and hands the worker back.

Nothing here reaches the network: gradio's analytics are off, no share link is made, and the page's fonts and scripts
come from the gradio package itself.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from rpcworker.wire.messages import MAX_INPUT_BYTES

from ..api.facade import InstantMeshWorker
from ..api.map import in_flight_window
from .web_page import PAGE_CSS, Banner, build_page
from .web_runner import ObjectRunner


def banner_of(worker: InstantMeshWorker) -> Banner:
    info, status = worker.info, worker.status()
    return Banner(
        info.model_label,
        info.weights,
        f"{info.backend} backend on {info.device}, worker pid {info.pid}; "
        f"batches up to {status.max_batch} object(s); python {info.python}",
    )


def serve(worker: InstantMeshWorker, *, host: str, port: int, out_dir: Path, on_ready: Callable[[str], None]) -> None:
    """Serves the page on ``host:port`` until SIGINT or SIGTERM; ``on_ready(url)`` once it answers. Objects still
    running at the end are cancelled and their files removed; the worker stays the caller's to close."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # gradio reads it at each call: no telemetry, no version check
    status = worker.status()
    runner = ObjectRunner(worker, out_dir, in_flight_window(status.max_batch, status.max_handles, status.mesh_lane))
    page = build_page(runner, banner_of(worker))
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, _setter(stop))
    try:
        page.queue(default_concurrency_limit=None)
        page.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            prevent_thread_lock=True,
            quiet=True,
            show_error=True,
            footer_links=[],
            allowed_paths=[str(out_dir)],
            max_file_size=MAX_INPUT_BYTES,
            enable_monitoring=False,
            ssr_mode=False,
            mcp_server=False,
            css=PAGE_CSS,
        )
        on_ready(f"http://{_url_host(host)}:{port}/")
        stop.wait()  # Ctrl-C raises KeyboardInterrupt here; SIGTERM sets the event
    finally:
        signal.signal(signal.SIGTERM, previous)
        page.close()
        runner.close()


def _setter(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handle


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
