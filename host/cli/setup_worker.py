"""``setup-worker`` prepares a worker environment and ``doctor`` checks one (the CLI side of host.worker.environment).

    instantmesh-rpc setup-worker ~/envs/instantmesh --python python3.10 --save   # a new venv with the worker's packages
    instantmesh-rpc setup-worker --conda instantmesh --save                     # add the few missing ones to upstream's env
    instantmesh-rpc doctor [--python ENV]

The worker's own code is not installed there: the host stages it (host.worker.environment). Only third-party
packages are, taken from this distribution's ``worker`` (or ``worker-base``) extra.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from ..worker.environment import EnvironmentProblem, config_paths, find_worker_environment, write_config
from ..worker.process import WorkerCommand
from .doctor import run_doctor

DISTRIBUTION = "instantmesh-rpc"
FALLBACK_REQUIREMENTS = {
    "worker": [
        "msgspec>=0.18",
        "torch>=2.1",
        "diffusers>=0.20.2",
        "transformers>=4.34",
        "huggingface_hub<0.26",
        "accelerate>=0.20",
        "safetensors>=0.4",
        "einops>=0.7",
        "omegaconf>=2.3",
        "trimesh>=4",
        "pillow>=9",
        "numpy>=1.23",
        "xatlas>=0.0.9",
    ],
    "worker-base": ["msgspec>=0.18", "pillow>=9", "numpy>=1.23", "trimesh>=4"],
}
TOOL_ERROR_CHARS = 1000
"""How much of a failed tool's error the one-line message quotes."""
UPSTREAM_ENV_ADDITIONS = ["msgspec>=0.18", "einops", "omegaconf", "trimesh", "xatlas", "safetensors"]
"""What upstream InstantMesh's own environment lacks; its torch/diffusers/transformers are left as they are."""


def extra_requirements(extra: str) -> list[str]:
    """The requirements of ``extra`` plus the core ones, from this distribution's metadata."""
    try:
        declared = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        return list(FALLBACK_REQUIREMENTS[extra])
    chosen = []
    for line in declared:
        spec, _, marker = line.partition(";")
        extras = re.findall(r'extra\s*==\s*"([^"]+)"', marker)
        if not extras or extra in extras:
            chosen.append(spec.strip())
    return chosen


def add_environment_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor", help="check a worker environment: python, torch, CUDA, library versions, weights"
    )
    doctor.add_argument(
        "--python",
        metavar="ENV",
        help="interpreter, venv dir, conda:ENV or command (default: as the worker would find it)",
    )
    doctor.add_argument("--json", action="store_true", help="the full report as JSON")
    for flag in ("--zero123plus", "--unet", "--lrm"):
        doctor.add_argument(flag, metavar="PATH", help="check this weight location too")
    setup = commands.add_parser("setup-worker", help="make (or complete) a worker environment, then check it")
    setup.add_argument("directory", nargs="?", metavar="DIR", help="the venv to create or update")
    setup.add_argument(
        "--python", default="python3.10", metavar="PY", help="interpreter for a new venv (default python3.10)"
    )
    setup.add_argument("--conda", metavar="ENV", help="add the missing packages to this existing conda env instead")
    setup.add_argument("--no-models", action="store_true", help="only what the mock backend needs (no torch)")
    setup.add_argument(
        "--torch", default=None, metavar="SPEC", help="torch requirement, e.g. torch==2.1.0 (default: the extra's)"
    )
    setup.add_argument("--save", action="store_true", help=f"remember it in {config_paths()[-1]}")


def run_environment_command(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        choice = find_worker_environment(args.python)
        command = WorkerCommand.parse(choice.spec)
        command.worker_code = choice.worker_code
        weights = {"zero123plus": args.zero123plus, "unet": args.unet, "lrm": args.lrm}
        return run_doctor(command, choice.source, as_json=args.json, weights=weights)
    return setup_worker(args)


def setup_worker(args: argparse.Namespace) -> int:
    if bool(args.conda) == bool(args.directory):
        raise EnvironmentProblem("setup-worker needs a DIR for a new venv, or --conda ENV (not both)")
    if args.conda:
        spec = f"conda:{args.conda}"
        packages = list(UPSTREAM_ENV_ADDITIONS)
    else:
        directory = Path(args.directory).expanduser().resolve()
        spec = str(directory)
        if not (directory / "bin" / "python").exists():
            print(f"creating {directory} with {args.python}")
            _run([args.python, "-m", "venv", str(directory)], f"cannot create a venv with {args.python}")
        packages = extra_requirements("worker-base" if args.no_models else "worker")
        if args.torch:
            packages = [p for p in packages if not re.match(r"torch\b", p)] + [args.torch]
    command = WorkerCommand.parse(spec)
    print(f"installing into {spec}: {' '.join(packages)}")
    _run([*command.prefix, "-m", "pip", "install", "-q", *packages], f"pip install failed in {spec}")
    if args.save:
        target = config_paths()[-1]
        write_config(target, {"python": spec})
        print(f"saved: {target} now names {spec}")
    return run_doctor(command, spec, models_expected=not args.no_models)


def _run(argv: list[str], failure: str) -> None:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise EnvironmentProblem(f"{failure}: {argv[0]} not found") from None
    if done.returncode != 0:
        raise EnvironmentProblem(f"{failure} (exit code {done.returncode}): {tool_error(done.stderr)}")


def tool_error(stderr: str) -> str:
    """A tool's whole error on one line: its ERROR lines when it marks them (pip), else every line (pyenv's
    'command not found' comes first and its advice last), joined with ' | ' and cut at TOOL_ERROR_CHARS."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    marked = [line for line in lines if line.lower().startswith("error")]
    text = " | ".join(marked or lines) or "no output"
    return text if len(text) <= TOOL_ERROR_CHARS else text[: TOOL_ERROR_CHARS - 3] + "..."
