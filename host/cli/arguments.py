"""The options the batch command and the interactive session share, parsed into the worker and settings
they describe. Ranges come from the wire types (``checked``), declared once in ``rpcworker.wire.messages``.

Exit codes: 0 every object done (or skipped), 1 some object failed, 2 bad usage or an environment that
cannot work (refused before any model loads), 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, get_args

import msgspec

from rpcworker.wire.messages import (
    DEFAULT_GUIDANCE,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    MESH_FORMATS,
    MESH_LANE_CHOICES,
    PRESET_CHOICES,
    Guidance,
    MaxBatch,
    Preset,
    Seed,
    Steps,
)

from ..api.facade import InstantMeshWorker
from ..api.options import MeshOptions, PrepareOptions, ViewOptions
from ..api.options import checked as checked_options
from ..images.framing import UPSTREAM_FOREGROUND_RATIO, BackgroundRemoval, ForegroundRatio
from .objects import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageProblem(Exception):
    """An option that cannot work here; the message is the one line shown, and the exit code is 2."""


PYTHON_HELP = (
    "worker Python: interpreter, venv dir, conda:ENV or command (default: INSTANTMESH_RPC_PYTHON or .venvs/models)"
)
"""--python's help, for every command that starts a worker."""


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("worker")
    group.add_argument(
        "--python",
        metavar="ENV",
        help=PYTHON_HELP,
    )
    group.add_argument(
        "--backend", choices=["instantmesh", "mock"], help="default: instantmesh (mock when --mock is given)"
    )
    group.add_argument(
        "--preset",
        choices=PRESET_CHOICES,
        help="weights: official (missing ones are an error), tiny (random), auto (official if found, else the "
        "labelled tiny preset; the default here, where the Python API defaults to official)",
    )
    group.add_argument("--zero123plus", metavar="DIR", help="the sudo-ai/zero123plus-v1.2 diffusers folder")
    group.add_argument("--unet", metavar="FILE", help="InstantMesh white-background UNet")
    group.add_argument("--lrm", metavar="FILE", help="LRM checkpoint (instant_mesh_large.ckpt)")
    group.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available)")
    group.add_argument("--mock", metavar="OPTS", help="mock backend options, e.g. step_delay=0.02")
    group.add_argument(
        "--max-batch",
        type=max_batch_type,
        metavar="N",
        help="objects per diffusion batch in the worker (default: the worker's, 8 on CUDA, 1 on CPU); above 1 the batch "
        "command keeps objects in flight so batches fill",
    )
    group.add_argument(
        "--mesh-lane",
        choices=MESH_LANE_CHOICES,
        help="the worker reconstructs one object beside the diffusion of the next (default auto: on with CUDA)",
    )
    group.add_argument(
        "--startup-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds for the worker to start (default 300)",
    )
    group.add_argument("--verbose", action="store_true", help="show the worker's stderr")


def add_object_options(parser: argparse.ArgumentParser, *, sheet_default: bool) -> None:
    parser.add_argument(
        "--steps",
        type=_steps,
        default=DEFAULT_STEPS,
        metavar="N",
        help=f"diffusion steps (default {DEFAULT_STEPS}, as upstream)",
    )
    parser.add_argument(
        "--seed", type=_seed, default=DEFAULT_SEED, metavar="S", help=f"diffusion seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--guidance-scale",
        type=_guidance,
        default=DEFAULT_GUIDANCE,
        metavar="G",
        help=f"classifier-free guidance scale (default {DEFAULT_GUIDANCE:g})",
    )
    parser.add_argument("--format", choices=MESH_FORMATS, default="obj", help="mesh format (default obj)")
    parser.add_argument(
        "--preprocess",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="crop, recentre and scale the object in the host (default on)",
    )
    parser.add_argument(
        "--foreground-ratio",
        type=_ratio,
        default=UPSTREAM_FOREGROUND_RATIO,
        metavar="R",
        help=f"object size in the prepared square (default {UPSTREAM_FOREGROUND_RATIO:g}, upstream's; Any6D uses 0.80)",
    )
    parser.add_argument("--flip", action="store_true", help="mirror the prepared input left-right (Any6D does)")
    parser.add_argument(
        "--white-background",
        action="store_true",
        help="paint outside the object white in the prepared input (Any6D does)",
    )
    parser.add_argument(
        "--background-removal",
        choices=get_args(BackgroundRemoval),
        default="auto",
        help="the outline of a photo without NAME_mask.png or alpha: auto (default: a white backdrop's "
        "heuristic, else rembg), rembg, white (the heuristic only) or none (the whole image)",
    )
    parser.add_argument(
        "--texture-map",
        action="store_true",
        help="a UV texture map (NAME.png + NAME.mtl, or inside the .glb) instead of vertex colours; needs xatlas in the worker env",
    )
    parser.add_argument(
        "--contact-sheet",
        action=argparse.BooleanOptionalAction,
        default=sheet_default,
        help=f"write NAME_sheet.png (default {'on' if sheet_default else 'off'})",
    )


def checked(kind: Any, name: str, text: str) -> int:
    """``text`` as a whole number that the wire type ``kind`` (e.g. ``Steps``) accepts; its range is declared
    once, in ``rpcworker.wire.messages``, so the CLI, the session and the worker refuse the same values."""
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    try:
        return int(msgspec.convert(number, kind))
    except msgspec.ValidationError as exc:
        raise ValueError(f"{name}: {exc}".replace("Expected `int`", "expected a whole number")) from None


def _steps(text: str) -> int:
    try:
        return checked(Steps, "steps", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def max_batch_type(text: str) -> int:
    try:
        return checked(MaxBatch, "--max-batch", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _guidance(text: str) -> float:
    """A number that the wire's ``Guidance`` accepts (its range is declared there)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"guidance scale must be a number, got {text!r}") from None
    try:
        return msgspec.convert(number, Guidance)
    except msgspec.ValidationError as exc:
        raise argparse.ArgumentTypeError(f"guidance scale: {exc}") from None


def _ratio(text: str) -> float:
    """A number that ``ForegroundRatio`` accepts (its range is declared there, for the API too)."""
    try:
        return msgspec.convert(float(text), ForegroundRatio)
    except ValueError:
        raise argparse.ArgumentTypeError(f"foreground ratio must be a number, got {text!r}") from None
    except msgspec.ValidationError as exc:
        raise argparse.ArgumentTypeError(f"foreground ratio: {exc}") from None


def _seed(text: str) -> int:
    try:
        return checked(Seed, "seed", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cli_preset(args: argparse.Namespace) -> Preset:
    """The person's --preset, else ``auto``: a person at the command line may get the labelled tiny preset
    when the official weights are missing; a program (the API) never does unless it asks."""
    preset: Preset = args.preset or "auto"
    return preset


def make_worker(args: argparse.Namespace) -> InstantMeshWorker:
    """The worker the options describe; stderr is echoed with --verbose and always kept for crash reports."""
    backend = args.backend or ("mock" if args.mock else "instantmesh")
    extra = ["--mock", args.mock] if args.mock else []
    on_stderr = (lambda line: print(f"worker| {line}", file=sys.stderr, flush=True)) if args.verbose else None
    return InstantMeshWorker(
        args.python,
        backend=backend,
        preset=cli_preset(args),
        zero123plus=args.zero123plus,
        unet=args.unet,
        lrm=args.lrm,
        device=args.device,
        max_batch=getattr(args, "max_batch", None),
        mesh_lane=getattr(args, "mesh_lane", None),
        worker_args=extra,
        startup_timeout=args.startup_timeout,
        on_stderr=on_stderr,
        prepare=False,  # the CLI prepares each input itself (host.cli.objects), to keep it as NAME_input.png
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        out_dir=Path(args.out).expanduser().resolve(),
        views=ViewOptions(seed=args.seed, num_inference_steps=args.steps, guidance_scale=args.guidance_scale),
        mesh=MeshOptions(format=args.format, texture_map=args.texture_map),
        preprocess=args.preprocess,
        preparation=checked_options(
            PrepareOptions(),
            foreground_ratio=args.foreground_ratio,
            flip=args.flip,
            white_background=args.white_background,
            background_removal=args.background_removal,
        ),
        contact_sheet=args.contact_sheet,
        overwrite=getattr(args, "overwrite", False),
    )
