"""What the batch CLI and the interactive session share: worker and object options, exit codes, checks
made before any worker starts, and the lines printed per object.

Exit codes: 0 every object done (or skipped), 1 some object failed, 2 bad usage or an environment that
cannot work (refused before any model loads), 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from rpcworker.wire.messages import DEFAULT_SEED, DEFAULT_STEPS, MESH_LANE_CHOICES, STEPS_RANGE, MaxBatch, Seed, Steps

from .api import InstantMeshWorker
from .objects import MESH_FORMATS, ObjectResult, Settings, shown
from .progress import ProgressPrinter

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageProblem(Exception):
    """An option that cannot work here; the message is the one line shown, and the exit code is 2."""


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
    group.add_argument(
        "--max-batch", type=_max_batch, metavar="N",
        help="objects per diffusion batch in the worker (default: the worker's, 8 on CUDA, 1 on CPU); above 1 the batch "
             "command keeps objects in flight so batches fill",
    )
    group.add_argument(
        "--mesh-lane", choices=MESH_LANE_CHOICES,
        help="the worker reconstructs one object beside the diffusion of the next (default auto: on with CUDA)",
    )
    group.add_argument("--startup-timeout", type=float, default=300.0, metavar="S", help="seconds for the worker to start (default 300)")
    group.add_argument("--verbose", action="store_true", help="show the worker's stderr")


def add_object_options(parser: argparse.ArgumentParser, *, sheet_default: bool) -> None:
    parser.add_argument("--steps", type=_steps, default=DEFAULT_STEPS, metavar="N", help=f"diffusion steps (default {DEFAULT_STEPS}, as upstream)")
    parser.add_argument("--seed", type=_seed, default=DEFAULT_SEED, metavar="S", help=f"diffusion seed (default {DEFAULT_SEED})")
    parser.add_argument("--format", choices=MESH_FORMATS, default="obj", help="mesh format (default obj)")
    parser.add_argument("--preprocess", action=argparse.BooleanOptionalAction, default=True, help="crop, recentre and scale the object in the host (default on)")
    parser.add_argument("--foreground-ratio", type=_ratio, default=0.85, metavar="R", help="object size in the prepared square (default 0.85, upstream's; Any6D uses 0.80)")
    parser.add_argument("--flip", action="store_true", help="mirror the prepared input left-right (Any6D does)")
    parser.add_argument("--white-background", action="store_true", help="paint outside the object white in the prepared input (Any6D does)")
    parser.add_argument("--texture-map", action="store_true", help="a UV texture map (NAME.png + NAME.mtl, or inside the .glb) instead of vertex colours; needs xatlas in the worker env")
    parser.add_argument(
        "--contact-sheet", action=argparse.BooleanOptionalAction, default=sheet_default, help=f"write NAME_sheet.png (default {'on' if sheet_default else 'off'})"
    )


def checked(kind: Any, name: str, text: str) -> int:
    """``text`` as a whole number that the wire type ``kind`` (e.g. ``Steps``) accepts; its range is declared
    once, in ``rpcworker.wire.messages``, so the CLI, the session and the worker refuse the same values."""
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    try:
        return msgspec.convert(number, kind)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{name}: {exc}".replace("Expected `int`", "expected a whole number")) from None


def _steps(text: str) -> int:
    try:
        return checked(Steps, "steps", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _max_batch(text: str) -> int:
    try:
        return checked(MaxBatch, "--max-batch", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"foreground ratio must be in (0, 1], got {value}")
    return value


def _seed(text: str) -> int:
    try:
        return checked(Seed, "seed", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        max_batch=getattr(args, "max_batch", None),
        mesh_lane=getattr(args, "mesh_lane", None),
        worker_args=extra,
        startup_timeout=args.startup_timeout,
        on_stderr=on_stderr,
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        out_dir=Path(args.out).expanduser().resolve(),
        steps=args.steps,
        seed=args.seed,
        format=args.format,
        preprocess=args.preprocess,
        contact_sheet=args.contact_sheet,
        overwrite=getattr(args, "overwrite", False),
        texture_map=args.texture_map,
        foreground_ratio=args.foreground_ratio,
        flip=args.flip,
        white_background=args.white_background,
    )



def check_host_libraries(settings: Settings) -> None:
    """Preprocessing and contact sheets need pillow and numpy in the host's own environment."""
    wanted = [what for what, on in (("preprocessing", settings.preprocess), ("contact sheets", settings.contact_sheet)) if on]
    missing = [name for module, name in (("PIL", "pillow"), ("numpy", "numpy")) if importlib.util.find_spec(module) is None]
    if wanted and missing:
        raise UsageProblem(
            f"{' and '.join(wanted)} need {' and '.join(missing)} in the host's Python ({sys.executable}): "
            "pip install 'instantmesh-rpc[images]', or pass --no-preprocess --no-contact-sheet"
        )


def check_output_dir(out_dir: Path) -> None:
    """Creates the output folder and proves it writable, before any worker starts or model loads."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageProblem(f"--out {shown(out_dir)} is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageProblem(f"--out {shown(out_dir)} cannot be created: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=out_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UsageProblem(f"--out {shown(out_dir)} is not writable: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageProblem(f"--out {shown(out_dir)} is not writable")


CUDA_PROBE = "import importlib.util, sys\nif importlib.util.find_spec('torch') is None: print('no-torch')\nelse:\n import torch; print('yes' if torch.cuda.is_available() else 'no')"
CUDA_PROBE_TIMEOUT_S = 120.0


def check_cuda_before_start(worker: InstantMeshWorker, requested: str | None, backend: str) -> None:
    """--device cuda with a worker env whose torch sees no CUDA is refused before the worker starts."""
    if not requested or not requested.startswith("cuda") or backend != "instantmesh":
        return
    command = worker.client.command
    try:
        answer = subprocess.run(
            [*command.prefix, "-c", CUDA_PROBE], env=command.environment(), capture_output=True, text=True, timeout=CUDA_PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return  # the worker's own start reports an interpreter that cannot run
    if answer == "no":
        raise UsageProblem(f"--device {requested}: torch in the worker environment sees no CUDA device; use --device cpu (or omit --device)")


def check_device(worker: InstantMeshWorker, requested: str | None) -> None:
    """--device cuda on a worker that answers with another device (e.g. the mock backend) is refused too."""
    if requested and requested.startswith("cuda") and not worker.info.device.startswith("cuda"):
        raise UsageProblem(f"--device {requested}: the worker has no CUDA (its device is {worker.info.device}); use --device cpu")


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


SESSION_HELP = f"""\
Type an image path (.png/.jpg; NAME_mask.png beside it is used as its mask) or a folder of images.
Commands:
  load              load both models now (otherwise the first object loads them)
  unload            free the models' memory (the next object loads them again)
  status            worker pid, models loaded, device memory, objects done, settings
  steps N           diffusion steps ({STEPS_RANGE[0]}-{STEPS_RANGE[1]})
  seed N            diffusion seed
  format F          mesh format: obj, glb or ply
  out DIR           output folder
  sheet on|off      contact sheet per object
  preprocess on|off crop/recentre/scale the input in the host
  help              this text
  quit              shut the worker down and leave (also Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C while an object runs cancels it and keeps the worker warm. A path named like a command: ./status"""


def bytes_text(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"
