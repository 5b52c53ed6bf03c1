"""``python -m host`` (or ``instantmesh-rpc``): ``batch`` turns images into meshes with one warm worker;
``session`` is interactive; ``mcp`` serves agents over MCP; ``web`` serves a browser page; ``doctor`` checks a
worker environment; ``setup-worker`` prepares one; ``fetch-weights`` downloads the official weights to where the
worker finds them; ``prepare`` builds the machine's compiled views ahead (images, CI).

    python -m host batch examples/inputs --out outputs
    python -m host session --out outputs
    python -m host doctor --python ENV
    python -m host fetch-weights
    python -m host prepare

Both start one worker (by default the project's models env with the tiny-preset fallback), load the
models once, and report per object. ``batch`` resumes: an object whose mesh exists is skipped unless
``--overwrite``. It never stops at a failed object; the exit status is 1 when any object failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import signal
import sys
import time
from collections.abc import Sequence

from rpcworker.wire.errors import RpcError
from rpcworker.wire.messages import PROTOCOL_VERSION

from ..api.facade import InstantMeshWorker
from ..api.naming import object_name_budget
from ..api.progress import ProgressPrinter
from ..worker.environment import EnvironmentProblem
from ..worker.errors import HostError, WeightsMissing, WorkerStartError
from .arguments import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageProblem,
    add_object_options,
    add_worker_options,
    make_worker,
    settings_from_args,
)
from .batch import run_pipelined
from .checks import (
    check_cuda_before_start,
    check_device,
    check_host_libraries,
    check_mcp_sdk,
    check_output_dir,
    check_planned_outputs,
)
from .display import printable, printable_lines, shown
from .fetch_weights import add_fetch_command, fallback_note, run_fetch_weights
from .inputs import ObjectInput, collect_inputs
from .lines import report_object, summary_table
from .objects import ObjectOutputs, ObjectResult, Settings, ensure_loaded, rembg_problem, run_object
from .prepare import add_prepare_command, run_prepare
from .resume import mesh_problem
from .scale import add_scale_options, make_pool, process_scaled, wants_scale_out
from .setup_worker import add_environment_commands, run_environment_command
from .web_command import add_web_command, run_web


def version_line() -> str:
    """This host's release and the protocol it speaks (a checkout without an install has no release number)."""
    try:
        release = importlib.metadata.version("instantmesh-rpc")
    except importlib.metadata.PackageNotFoundError:
        release = "(not installed)"
    return f"instantmesh-rpc {release}, protocol {PROTOCOL_VERSION}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instantmesh-rpc", description="InstantMesh through a warm worker: image -> six views -> mesh."
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{batch,session,mcp,web,doctor,setup-worker,fetch-weights,prepare}"
    )
    batch = commands.add_parser(
        "batch",
        help="every image (or folder of images) to a mesh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="images (.png/.jpg) or folders of them; NAME_mask.png beside NAME.png is its mask",
    )
    batch.add_argument("--out", required=True, metavar="DIR", help="where meshes, views grids and sheets go")
    batch.add_argument("--overwrite", action="store_true", help="redo objects whose mesh already exists")
    batch.add_argument(
        "--report",
        action="store_true",
        help="also write OUT/index.html: every object's input, views, a 3D view of its mesh, timings (static, offline)",
    )
    add_object_options(batch, sheet_default=False)
    add_worker_options(batch)
    add_scale_options(batch)
    session = commands.add_parser("session", help="interactive: type image paths, get meshes, the worker stays warm")
    session.add_argument("--out", default="outputs", metavar="DIR", help="output folder (default: outputs)")
    add_object_options(session, sheet_default=True)
    add_worker_options(session)
    session.set_defaults(max_batch=1)  # one object at a time: no batch to compile for at start
    serving = commands.add_parser(
        "mcp",
        help="serve image_to_mesh, generate_views, reconstruct and status to an agent over MCP (stdio)",
        description="An MCP server on stdin/stdout over one warm worker (or --workers N); logs go to stderr. "
        "Needs the MCP SDK: pip install 'instantmesh-rpc[mcp]'.",
    )
    add_worker_options(serving)
    add_scale_options(serving, ray=False)
    add_web_command(commands)
    add_environment_commands(commands)
    add_fetch_command(commands)
    add_prepare_command(commands)
    return parser


def run_batch(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    check_host_libraries(settings)
    check_output_dir(settings.out_dir)
    if args.report:
        from .report import ReportUnavailable, check_report_possible

        try:
            check_report_possible(settings.out_dir, settings.overwrite)
        except ReportUnavailable as exc:
            raise UsageProblem(str(exc)) from None
    objects, notes = collect_inputs(args.inputs, object_name_budget(settings.out_dir))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not objects:
        print("error: no input images found", file=sys.stderr)
        return EXIT_USAGE
    results: dict[str, ObjectResult] = {}
    todo: list[tuple[ObjectInput, ObjectOutputs]] = []
    for item in objects:
        outputs = settings.outputs(item.name)
        if item.problem is not None:
            results[item.name] = ObjectResult(item.name, item.image, "failed", error=item.problem)
        elif (problem := mesh_problem(outputs.mesh, settings.overwrite)) is not None:
            results[item.name] = ObjectResult(item.name, item.image, "failed", error=problem)
        elif outputs.mesh.exists() and not settings.overwrite:
            results[item.name] = ObjectResult(item.name, item.image, "skipped", mesh_path=outputs.mesh)
        elif (problem := rembg_problem(item, settings)) is not None:
            results[item.name] = ObjectResult(item.name, item.image, "failed", error=problem)
        else:
            todo.append((item, outputs))
    check_planned_outputs(objects, todo, settings, report=args.report)
    skipped = sum(r.status == "skipped" for r in results.values())
    print(
        f"{len(objects)} object(s) -> {shown(settings.out_dir)}"
        + (f"; {skipped} already done (skipped; --overwrite redoes them)" if skipped else "")
    )
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
    counts = {
        status: sum(r.status == status for r in ordered)
        for status in ("ok", "skipped", "failed", "cancelled", "not run")
    }
    print(", ".join(f"{n} {status}" for status, n in counts.items() if n) + (f"   [model: {label}]" if label else ""))
    if args.report:
        from .report import ReportNotWritten, write_report

        try:
            page = write_report(
                settings.out_dir,
                ordered,
                label,
                settings.overwrite,
                lambda line: print(f"note: {printable(line)}", file=sys.stderr),
            )
            print(f"report: {shown(page)}")
        except ReportNotWritten as exc:
            print(f"error: {printable(exc)}", file=sys.stderr)
            code = code or EXIT_FAILED
    failed = [r for r in ordered if r.status in ("failed", "cancelled", "not run")]
    if failed:
        print("failed objects:", file=sys.stderr)
        for r in failed:
            print(f"  {printable(r.name)} ({shown(r.source)}): {printable(r.error or r.status)}", file=sys.stderr)
        code = code or EXIT_FAILED
    return code


def _process(
    args: argparse.Namespace,
    settings: Settings,
    todo: list[tuple[ObjectInput, ObjectOutputs]],
    results: dict[str, ObjectResult],
) -> tuple[int, str]:
    """Runs the objects through one worker. Returns the exit code so far and the model label."""
    printer = ProgressPrinter(status_stream=sys.stderr)  # the objects line of a batching worker goes to stderr
    worker = make_worker(args)
    code, label = EXIT_OK, ""
    position, started = 0, False
    try:
        check_cuda_before_start(worker, args.device, args.backend or ("mock" if args.mock else "instantmesh"))
        print(f"starting the worker ({worker.command_line}) ...", flush=True)
        began = time.monotonic()
        info = worker.info
        label, started = info.model_label, True
        check_device(worker, args.device)
        print(
            f"worker ready in {time.monotonic() - began:.1f} s: pid {info.pid}, python {info.python}, device {info.device}"
        )
        print(f"model: {label}")
        note = fallback_note(info.weights, args.preset)
        if note:
            print(note)
        loaded = ensure_loaded(worker, printer)
        if loaded:
            parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in loaded.items())
            print(f"models loaded: {parts} (once; every object below runs warm)")
        max_batch = worker.status().max_batch
        if max_batch > 1:
            print(
                f"the worker batches up to {max_batch} objects: {len(todo)} object(s) in flight through it, reported in order"
            )

            def done(at: int, result: ObjectResult) -> None:
                nonlocal position
                item = todo[at][0]
                _announce(printer, at, len(todo), item)
                results[item.name] = result
                report_object(printer, result)
                position = at + 1

            run_pipelined(worker, todo, settings, printer, done)
        else:
            for position, (item, outputs) in enumerate(todo):
                _announce(printer, position, len(todo), item)
                result = run_object(worker, item, settings, outputs, printer)
                results[item.name] = result
                report_object(printer, result)
        position = len(todo)
    except KeyboardInterrupt:
        printer.end_line()
        print("interrupted: the request in flight was cancelled", file=sys.stderr)
        code = EXIT_INTERRUPTED
        _mark(todo, results, position, "cancelled", "interrupted (Ctrl-C)")
    except UsageProblem as exc:
        printer.end_line()
        if position == 0:
            raise  # nothing ran: the run is refused in one line (main), with no table of objects
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
        _mark(todo, results, position, "not run", str(exc))
    except WorkerStartError as exc:
        printer.end_line()
        if not started:
            raise UsageProblem(f"the worker could not start: {printable_lines(exc).splitlines()[0]}") from None
        print(f"error: the worker could not start: {printable_lines(exc)}", file=sys.stderr)
        code = EXIT_FAILED
        why = "the official weights are missing (see above)" if isinstance(exc, WeightsMissing) else exc
        _mark(todo, results, position, "failed", f"worker could not start: {str(why).splitlines()[0]}")
    except (HostError, RpcError) as exc:
        printer.end_line()
        print(f"error: {printable_lines(exc)}", file=sys.stderr)
        code = EXIT_FAILED
        _mark(todo, results, position, "failed", str(exc).splitlines()[0])
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            worker.close()
            if code == EXIT_INTERRUPTED:
                for _, outputs in todo[position:]:  # several may have been in flight
                    outputs.discard_unfinished()
        finally:
            signal.signal(signal.SIGINT, previous)
    return code, label


def _announce(printer: ProgressPrinter, position: int, total: int, item: ObjectInput) -> None:
    printer.print(
        f"[{position + 1}/{total}] {printable(item.name)}  <- {shown(item.image)}"
        + (f" + {shown(item.mask)}" if item.mask else "")
    )


def _mark(
    todo: list[tuple[ObjectInput, ObjectOutputs]],
    results: dict[str, ObjectResult],
    position: int,
    status: str,
    reason: str,
) -> None:
    """The object at ``position`` (unless it finished) gets ``status``; those after it were never started."""
    for index, (item, _) in enumerate(todo[position:], start=position):
        if item.name not in results:
            first = index == position
            results[item.name] = ObjectResult(
                item.name, item.image, status if first else "not run", error=reason if first else None
            )


def run_mcp(args: argparse.Namespace) -> int:
    """The MCP tools over the worker (or pool) the options describe, built as batch builds them. The worker is
    started before the server answers anything, so one that cannot start is one line and exit code 2; its models
    load in the background while the server runs."""
    check_mcp_sdk()
    from ..faces.mcp_server import serve

    try:
        target = make_pool(args) if args.workers > 1 else make_worker(args)
    except ValueError as exc:  # a pool that cannot be planned (devices, split)
        raise UsageProblem(str(exc)) from None
    if isinstance(target, InstantMeshWorker):
        check_cuda_before_start(target, args.device, args.backend or ("mock" if args.mock else "instantmesh"))
    try:
        target.start()
    except WorkerStartError as exc:
        target.close()
        raise UsageProblem(f"the worker could not start: {str(exc).splitlines()[0]}") from None
    return serve(target, verbose=args.verbose)


def main(argv: Sequence[str] | None = None) -> int:
    """Every problem the person can fix is one line on stderr and exit code 2; see host.cli.arguments."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "batch":
            return run_batch(args)
        if args.command in ("doctor", "setup-worker"):
            return run_environment_command(args)
        if args.command == "mcp":
            return run_mcp(args)
        if args.command == "fetch-weights":
            return run_fetch_weights(args)
        if args.command == "prepare":
            return run_prepare(args)
        if args.command == "web":
            return run_web(args)
        from .session import run_session

        return run_session(args)
    except (UsageProblem, EnvironmentProblem) as exc:
        print(f"error: {printable_lines(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
