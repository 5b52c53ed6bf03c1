"""``python -m host batch --workers N`` (a local WorkerPool) and ``--ray ADDRESS|auto`` (Ray actors).

The same objects, outputs, resume rule and summary table as one worker; objects finish in any order, so
progress bars give way to one line per finished object.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from rpcworker.wire.errors import RpcError

from ..api.preparing import prepare_image
from ..api.progress import ProgressPrinter
from ..scale.plan import pool_options
from ..scale.pool import WorkerPool
from ..scale.slots import visible_gpus
from ..worker.errors import HostError, WorkerStartError
from .arguments import cli_preset
from .display import printable, printable_lines, shown
from .fetch_weights import fallback_note
from .inputs import ObjectInput
from .objects import ObjectOutputs, ObjectResult, Settings, run_object
from .out_files import replace_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
Report = Callable[[ProgressPrinter, ObjectResult], None]


def add_scale_options(parser: argparse.ArgumentParser, *, ray: bool = True) -> None:
    """--workers N, and with ``ray`` --ray ADDRESS."""
    group = parser.add_argument_group("many GPUs, many machines" if ray else "many GPUs")
    group.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="N workers at once, spread over the visible GPUs (or on --device); default 1",
    )
    if not ray:
        return
    group.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on a Ray cluster (auto, or ray://HOST:PORT), one actor per GPU; inputs and --out must be on storage every node sees",
    )


def _workers(text: str) -> int:
    """--workers N, held to the pool's own ``WorkerCount``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    try:
        pool_options(workers=value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def wants_scale_out(args: argparse.Namespace) -> bool:
    return getattr(args, "workers", 1) > 1 or getattr(args, "ray", None) is not None


class _LinePrinter(ProgressPrinter):
    """Drops progress notifications: bars of several objects at once would overwrite each other."""

    def __call__(self, progress: Any) -> None:
        return None


def worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """InstantMeshWorker keywords from the batch options (as host.cli.main.make_worker builds them)."""
    on_stderr = (lambda line: print(f"worker| {line}", file=sys.stderr, flush=True)) if args.verbose else None
    return {
        "backend": args.backend or ("mock" if args.mock else "instantmesh"),
        "preset": cli_preset(args),
        "zero123plus": args.zero123plus,
        "unet": args.unet,
        "lrm": args.lrm,
        "worker_args": ["--mock", args.mock] if args.mock else [],
        "startup_timeout": args.startup_timeout,
        "on_stderr": on_stderr,
        "prepare": False,  # the CLI prepares each input itself, to keep it as NAME_input.png
    }


def make_pool(args: argparse.Namespace) -> WorkerPool:
    """--workers N: round-robin over the visible GPUs, or N on --device (or the default) when none is."""
    gpus = visible_gpus()
    if gpus and not args.device:
        return WorkerPool(
            args.python, devices=[f"cuda:{i % len(gpus)}" for i in range(args.workers)], **worker_options(args)
        )
    return WorkerPool(args.python, workers=args.workers, device=args.device, **worker_options(args))


def process_scaled(
    args: argparse.Namespace,
    settings: Settings,
    todo: list[tuple[ObjectInput, ObjectOutputs]],
    results: dict[str, ObjectResult],
    report: Report,
) -> tuple[int, str]:
    """Runs the objects over a pool or Ray; fills ``results``. Returns the exit code so far and the model label."""
    if args.ray is not None and args.workers > 1:
        print(
            "error: give --workers or --ray, not both (under Ray every GPU of the cluster gets an actor)",
            file=sys.stderr,
        )
        _fail_all(todo, results, "not run: --workers with --ray", status="not run")
        return EXIT_USAGE, ""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    if args.ray is not None:
        return _process_ray(args, settings, todo, results, report)
    printer = _LinePrinter()
    try:
        print(f"starting {args.workers} workers ...", flush=True)
        began = time.monotonic()
        pool = make_pool(args).start()
    except (WorkerStartError, ValueError) as exc:
        print(f"error: the workers could not start: {printable_lines(exc)}", file=sys.stderr)
        _fail_all(todo, results, f"workers could not start: {str(exc).splitlines()[0]}")
        return EXIT_USAGE, ""
    executor = ThreadPoolExecutor(max_workers=pool.size, thread_name_prefix="batch")
    interrupted = False
    try:
        label = pool.model_label
        pids = ", ".join(f"{s.pid} ({s.device or 'default'})" for s in pool.status())
        print(f"{pool.size} workers ready in {time.monotonic() - began:.1f} s: pids {pids}")
        print(f"model: {label}")
        note = fallback_note(pool.weights, args.preset)
        if note:
            print(note)
        pool.load()
        futures = {executor.submit(run_object, pool, item, settings, outputs, printer): item for item, outputs in todo}  # type: ignore[arg-type]
        for done, future in enumerate(as_completed(futures), start=1):
            item = futures[future]
            result = future.result()
            results[item.name] = result
            printer.print(f"[{done}/{len(todo)}] {printable(item.name)}  <- {shown(item.image)}")
            report(printer, result)
    except KeyboardInterrupt:
        print("interrupted: stopping the workers", file=sys.stderr)
        interrupted = True
        _fail_all(todo, results, "interrupted (Ctrl-C)", status="cancelled")
        return 130, ""
    except HostError as exc:
        print(f"error: {printable_lines(exc)}", file=sys.stderr)
        _fail_all(todo, results, str(exc).splitlines()[0])
        return EXIT_FAILED, ""
    finally:
        # Objects not started are dropped, then the workers stop: the calls in flight fail at once.
        executor.shutdown(wait=False, cancel_futures=True)
        pool.close()
        executor.shutdown(wait=True)
        if interrupted:
            for _item, outputs in todo:
                outputs.discard_unfinished()
    return EXIT_OK, label


def _process_ray(
    args: argparse.Namespace,
    settings: Settings,
    todo: list[tuple[ObjectInput, ObjectOutputs]],
    results: dict[str, ObjectResult],
    report: Report,
) -> tuple[int, str]:
    try:
        from ..scale.ray import map_images
    except ImportError as exc:
        print(
            f"error: --ray needs the ray package in the host environment (pip install 'instantmesh-rpc[ray]'): {exc}",
            file=sys.stderr,
        )
        _fail_all(todo, results, "not run: ray is not installed", status="not run")
        return EXIT_USAGE, ""
    if settings.contact_sheet:
        print("note: --contact-sheet is not made under --ray", file=sys.stderr)
    images: list[Path] = []
    names: list[str] = []
    for item, outputs in todo:
        image = item.image
        if settings.preprocess:
            try:
                png = prepare_image(item.image, settings.preparation).png
                replace_file(settings.out_dir, outputs.prepared.name, png)  # never through a planted symlink
            except (RpcError, OSError) as exc:
                error = exc.message if isinstance(exc, RpcError) else f"{type(exc).__name__}: {exc}"
                results[item.name] = ObjectResult(item.name, item.image, "failed", error=error)
                continue
            image = outputs.prepared
        images.append(image)
        names.append(item.name)
    options = worker_options(args)
    options.pop("on_stderr")
    cpu_only = args.device == "cpu" or options["backend"] == "mock"
    try:
        import ray

        if not ray.is_initialized():
            ray.init(address=args.ray, log_to_driver=args.verbose)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        print(f"error: cannot reach the Ray cluster at {args.ray!r}: {exc}", file=sys.stderr)
        _fail_all(todo, results, "no Ray cluster")
        return EXIT_USAGE, ""
    try:
        report_ = map_images(
            images,
            settings.out_dir,
            python=args.python,
            names=names,
            num_gpus=0 if cpu_only else 1,
            view_options=settings.views,
            mesh_options=settings.mesh,
            overwrite=settings.overwrite,
            device=args.device,
            **options,
        )
    except ValueError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        _fail_all(todo, results, str(exc))
        return EXIT_USAGE, ""
    printer = _LinePrinter()
    by_name = {item.name: item for item, _ in todo}
    label = ""
    for outcome in report_.outcomes:
        item = by_name[outcome.name]
        if outcome.mesh is None:
            result = ObjectResult(item.name, item.image, "failed", error=outcome.error)
        else:
            label = outcome.mesh.model_label
            timings = outcome.mesh.timings
            result = ObjectResult(
                item.name,
                item.image,
                "ok",
                mesh_s=timings.get("total_s"),
                vertices=outcome.mesh.num_vertices,
                faces=outcome.mesh.num_faces,
                mesh_path=Path(outcome.mesh.path),
            )
        results[item.name] = result
        printer.print(f"{printable(item.name)} on {outcome.worker}")
        report(printer, result)
    return EXIT_OK, label


def _fail_all(
    todo: list[tuple[ObjectInput, ObjectOutputs]], results: dict[str, ObjectResult], reason: str, status: str = "failed"
) -> None:
    for item, _ in todo:
        if item.name not in results:
            results[item.name] = ObjectResult(item.name, item.image, status, error=reason)
