"""``python -m host``: ``batch`` turns images into meshes with one warm worker; ``session`` is interactive.

    python -m host batch examples/inputs --out outputs
    python -m host session --out outputs

Both start one worker (by default the project's models env with the tiny-preset fallback), load the
models once, and report per object. ``batch`` resumes: an object whose mesh exists is skipped unless
``--overwrite``. It never stops at a failed object; the exit status is 1 when any object failed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rpcworker.errors import HostError, RpcError, WorkerStartError

from .api import InstantMeshWorker
from .objects import (
    MESH_FORMATS,
    ObjectInput,
    ObjectOutputs,
    ObjectResult,
    Settings,
    collect_inputs,
    ensure_loaded,
    run_object,
    shown,
)
from .progress import ProgressPrinter
from .scale_cli import add_scale_options, process_scaled, wants_scale_out

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("worker")
    group.add_argument("--python", metavar="ENV", help="worker Python: interpreter, venv dir, conda:ENV or command (default: INSTANTMESH_RPC_PYTHON or .venvs/models)")
    group.add_argument("--backend", choices=["instantmesh", "mock"], help="default: instantmesh (mock when --mock is given)")
    group.add_argument("--preset", choices=["auto", "official", "tiny"], help="weights: official, tiny (random), auto (official if found, else tiny; the default)")
    group.add_argument("--zero123plus", metavar="DIR", help="the sudo-ai/zero123plus-v1.2 diffusers folder")
    group.add_argument("--unet", metavar="FILE", help="InstantMesh white-background UNet")
    group.add_argument("--lrm", metavar="FILE", help="LRM checkpoint (instant_mesh_large.ckpt)")
    group.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available)")
    group.add_argument("--mock", metavar="OPTS", help="mock backend options, e.g. step_delay=0.02")
    group.add_argument("--startup-timeout", type=float, default=300.0, metavar="S", help="seconds for the worker to start (default 300)")
    group.add_argument("--verbose", action="store_true", help="show the worker's stderr")


def add_object_options(parser: argparse.ArgumentParser, *, sheet_default: bool) -> None:
    parser.add_argument("--steps", type=_steps, default=75, metavar="N", help="diffusion steps (default 75, as upstream)")
    parser.add_argument("--seed", type=_seed, default=42, metavar="S", help="diffusion seed (default 42)")
    parser.add_argument("--format", choices=MESH_FORMATS, default="obj", help="mesh format (default obj)")
    parser.add_argument("--preprocess", action=argparse.BooleanOptionalAction, default=True, help="crop, recentre and scale the object in the host (default on)")
    parser.add_argument(
        "--contact-sheet", action=argparse.BooleanOptionalAction, default=sheet_default, help=f"write NAME_sheet.png (default {'on' if sheet_default else 'off'})"
    )


def _steps(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"steps must be 1..1000, got {value}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m host", description="InstantMesh through a warm worker: image -> six views -> mesh.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{batch,session}")
    batch = commands.add_parser("batch", help="every image (or folder of images) to a mesh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="images (.png/.jpg) or folders of them; NAME_mask.png beside NAME.png is its mask")
    batch.add_argument("--out", required=True, metavar="DIR", help="where meshes, views grids and sheets go")
    batch.add_argument("--overwrite", action="store_true", help="redo objects whose mesh already exists")
    add_object_options(batch, sheet_default=False)
    add_worker_options(batch)
    add_scale_options(batch)
    session = commands.add_parser("session", help="interactive: type image paths, get meshes, the worker stays warm")
    session.add_argument("--out", default="outputs", metavar="DIR", help="output folder (default: outputs)")
    add_object_options(session, sheet_default=True)
    add_worker_options(session)
    return parser


def make_worker(args: argparse.Namespace) -> InstantMeshWorker:
    """The worker the options describe; stderr is echoed with --verbose and always kept for crash reports."""
    backend = args.backend or ("mock" if args.mock else "instantmesh")
    extra = ["--mock", args.mock] if args.mock else []
    on_stderr = (lambda line: print(f"worker| {line}", file=sys.stderr, flush=True)) if args.verbose else None
    return InstantMeshWorker(
        args.python,
        backend=backend,
        preset=args.preset,
        zero123plus=args.zero123plus,
        unet=args.unet,
        lrm=args.lrm,
        device=args.device,
        worker_args=extra,
        startup_timeout=args.startup_timeout,
        on_stderr=on_stderr,
    )


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        out_dir=Path(args.out).expanduser().resolve(),
        steps=args.steps,
        seed=args.seed,
        format=args.format,
        preprocess=args.preprocess,
        contact_sheet=args.contact_sheet,
        overwrite=getattr(args, "overwrite", False),
    )


def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_table(results: Sequence[ObjectResult]) -> str:
    """Object, status, views s, mesh s, vertices, faces, path: one row per object, aligned."""
    header = ("object", "status", "views s", "mesh s", "vertices", "faces", "path")
    rows = [header]
    for r in results:
        path = r.mesh_path if r.mesh_path is not None else r.source
        rows.append(
            (
                r.name,
                r.status,
                _fmt_seconds(r.views_s),
                _fmt_seconds(r.mesh_s),
                "-" if r.vertices is None else str(r.vertices),
                "-" if r.faces is None else str(r.faces),
                shown(path),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {2, 3, 4, 5}
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def report_object(printer: ProgressPrinter, result: ObjectResult) -> None:
    """The lines printed when an object finishes: where each output went and what it took."""
    if result.status == "ok":
        if result.grid_path is not None:
            printer.print(f"  views {result.views_s:6.1f} s -> {shown(result.grid_path)}")
        printer.print(f"  mesh  {result.mesh_s:6.1f} s -> {shown(result.mesh_path or '')} ({result.vertices} vertices, {result.faces} faces)")
        if result.sheet_path is not None:
            printer.print(f"  sheet          -> {shown(result.sheet_path)}")
    elif result.status == "failed":
        printer.print(f"  FAILED: {result.error}")
    for warning in result.warnings:
        printer.print(f"  warning: {warning}")


def _describe_start(worker: InstantMeshWorker) -> str:
    return " ".join(worker.client.command.argv(worker.client.worker_args)[:1])


def run_batch(args: argparse.Namespace) -> int:
    settings = _settings(args)
    objects, notes = collect_inputs(args.inputs)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not objects:
        print("error: no input images found", file=sys.stderr)
        return EXIT_USAGE
    results: dict[str, ObjectResult] = {}
    todo: list[tuple[ObjectInput, ObjectOutputs]] = []
    for item in objects:
        outputs = ObjectOutputs.of(settings.out_dir, item.name, settings.format)
        if item.problem is not None:
            results[item.name] = ObjectResult(item.name, item.image, "failed", error=item.problem)
        elif outputs.mesh.exists() and not settings.overwrite:
            results[item.name] = ObjectResult(item.name, item.image, "skipped", mesh_path=outputs.mesh)
        else:
            todo.append((item, outputs))
    skipped = sum(r.status == "skipped" for r in results.values())
    print(f"{len(objects)} object(s) -> {shown(settings.out_dir)}" + (f"; {skipped} already done (skipped; --overwrite redoes them)" if skipped else ""))
    code = EXIT_OK
    label = ""
    if todo:
        if wants_scale_out(args):
            code, label = process_scaled(args, settings, todo, results, report_object)
        else:
            code, label = _process(args, settings, todo, results)
    ordered = [results[item.name] for item in objects]
    print()
    print(summary_table(ordered))
    counts = {status: sum(r.status == status for r in ordered) for status in ("ok", "skipped", "failed", "cancelled", "not run")}
    print(", ".join(f"{n} {status}" for status, n in counts.items() if n) + (f"   [model: {label}]" if label else ""))
    failed = [r for r in ordered if r.status in ("failed", "cancelled", "not run")]
    if failed:
        print("failed objects:", file=sys.stderr)
        for r in failed:
            print(f"  {r.name} ({shown(r.source)}): {r.error or r.status}", file=sys.stderr)
        code = code or EXIT_FAILED
    return code


def _process(
    args: argparse.Namespace, settings: Settings, todo: list[tuple[ObjectInput, ObjectOutputs]], results: dict[str, ObjectResult]
) -> tuple[int, str]:
    """Runs the objects through one worker. Returns the exit code so far and the model label."""
    printer = ProgressPrinter()
    worker = make_worker(args)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    code, label = EXIT_OK, ""
    position, started = 0, False
    try:
        print(f"starting the worker ({_describe_start(worker)}) ...", flush=True)
        began = time.monotonic()
        info = worker.client.start()
        label, started = info.model_label, True
        print(f"worker ready in {time.monotonic() - began:.1f} s: pid {info.pid}, python {info.python}, device {info.device}")
        print(f"model: {label}")
        loaded = ensure_loaded(worker, printer)
        if loaded:
            parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in loaded.items())
            print(f"models loaded: {parts} (once; every object below runs warm)")
        for position, (item, outputs) in enumerate(todo):
            printer.print(f"[{position + 1}/{len(todo)}] {item.name}  <- {shown(item.image)}" + (f" + {shown(item.mask)}" if item.mask else ""))
            result = run_object(worker, item, settings, outputs, printer)
            results[item.name] = result
            report_object(printer, result)
        position = len(todo)
    except KeyboardInterrupt:
        printer.end_line()
        print("interrupted: the request in flight was cancelled", file=sys.stderr)
        code = EXIT_INTERRUPTED
        _mark(todo, results, position, "cancelled", "interrupted (Ctrl-C)")
    except WorkerStartError as exc:
        printer.end_line()
        print(f"error: the worker could not start: {exc}", file=sys.stderr)
        code = EXIT_FAILED if started else EXIT_USAGE
        _mark(todo, results, position, "failed", f"worker could not start: {str(exc).splitlines()[0]}")
    except (HostError, RpcError) as exc:
        printer.end_line()
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_FAILED
        _mark(todo, results, position, "failed", str(exc).splitlines()[0])
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            worker.close()
        finally:
            signal.signal(signal.SIGINT, previous)
    return code, label


def _mark(todo: list[tuple[ObjectInput, ObjectOutputs]], results: dict[str, ObjectResult], position: int, status: str, reason: str) -> None:
    """The object at ``position`` (unless it finished) gets ``status``; those after it were never started."""
    for index, (item, _) in enumerate(todo[position:], start=position):
        if item.name not in results:
            first = index == position
            results[item.name] = ObjectResult(item.name, item.image, status if first else "not run", error=reason if first else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "batch":
        return run_batch(args)
    from .interactive import run_session

    return run_session(args)


if __name__ == "__main__":
    sys.exit(main())
