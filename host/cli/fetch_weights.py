"""``fetch-weights``: downloads the official weights to where the worker looks for them, and checks them.

    instantmesh-rpc fetch-weights                 # into the Hugging Face cache (HF_HUB_CACHE / HF_HOME)
    instantmesh-rpc fetch-weights --dir ckpts     # into ./ckpts, a checkpoint folder the worker searches

The download needs huggingface_hub and the check needs torch: both live in the worker's environment, never the
host's. So ``instantmesh.fetch`` runs there, found and started as a worker would be (host.worker.environment), with
its progress on this terminal (stderr) and its result as one JSON line on stdout, which is printed here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
from typing import Any

from ..worker.environment import find_worker_environment
from ..worker.process import WorkerCommand
from .arguments import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

FETCH_MODULE = "instantmesh.fetch"
FETCH_COMMAND = "instantmesh-rpc fetch-weights"
WHAT = {
    "zero123plus": ("Zero123++ v1.2 folder", "--zero123plus", "zero123plus", "INSTANTMESH_ZERO123PLUS"),
    "unet": ("white-background UNet", "--unet", "unet", "INSTANTMESH_UNET"),
    "lrm": ("LRM checkpoint", "--lrm", "lrm", "INSTANTMESH_LRM"),
}
"""Per weight: what it is, the CLI option, the Python API's argument and the environment variable that name it."""
DESCRIPTION = """\
Downloads the official weights (Zero123++ v1.2, the InstantMesh UNet and LRM) to where the worker looks for
them, then checks each with the worker's loaders (keys and shapes, in seconds).

    instantmesh-rpc fetch-weights                 # into the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub)
    instantmesh-rpc fetch-weights --dir ckpts     # into ./ckpts, a checkpoint folder the worker searches

It runs in the worker's environment (its huggingface_hub and torch) and shows a bar per file on a terminal,
a line per file otherwise."""


def fallback_note(weights: str | None, preset: str | None) -> str | None:
    """The line saying why the tiny preset runs when it is the fallback (no --preset), not the person's choice."""
    if weights != "tiny" or preset is not None:
        return None
    return (
        f"note: the official weights were not found, so the tiny preset runs: `{FETCH_COMMAND}` downloads them "
        "(`doctor` lists every place they were looked for)"
    )


def add_fetch_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fetch = commands.add_parser(
        "fetch-weights",
        help="download the official weights (Zero123++ v1.2, InstantMesh UNet and LRM) and check them",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Only the files the worker reads are downloaded (several GB: the UNet alone is 3.5 GB); files already there are kept. "
        "A broken transfer resumes where it stopped. Offline (HF_HUB_OFFLINE=1, or the Hub out of reach) it "
        "fails in one line. HF_ENDPOINT, HF_TOKEN, HF_HOME and HF_HUB_CACHE are honoured.",
    )
    fetch.add_argument(
        "--dir",
        metavar="DIR",
        help="put the files in DIR (DIR/zero123plus-v1.2/, DIR/diffusion_pytorch_model.bin, "
        "DIR/instant_mesh_large.ckpt) instead of the Hugging Face cache; the worker finds DIR by itself when it "
        "is ./ckpts or ./instantmesh/ckpts, otherwise the command prints what to pass",
    )
    fetch.add_argument(
        "--python",
        metavar="ENV",
        help="the worker environment to download with: interpreter, venv dir, conda:ENV or command "
        "(default: as the worker would find it)",
    )
    fetch.add_argument(
        "--lrm-config",
        metavar="YAML",
        help="check the LRM checkpoint against this config (default: instant-mesh-large, what the worker loads)",
    )


def run_fetch_weights(args: argparse.Namespace) -> int:
    """0 when every file is there and checked; 1 when the fetch or a check failed (one line on stderr)."""
    choice = find_worker_environment(args.python)
    command = WorkerCommand.parse(choice.spec)
    command.worker_code = choice.worker_code
    argv = [*command.prefix, "-m", FETCH_MODULE]
    if args.dir:
        argv += ["--dir", args.dir]
    if args.lrm_config:
        argv += ["--lrm-config", args.lrm_config]
    env = command.environment()
    try:
        # stderr stays this terminal's: the progress bars draw there. stdout brings back the JSON line.
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        print(f"error: fetch-weights: worker interpreter {argv[0]!r} not found (from {choice.source})", file=sys.stderr)
        return EXIT_FAILED
    try:
        stdout, _ = process.communicate()
    except KeyboardInterrupt:
        process.wait()  # it had the same Ctrl-C: huggingface_hub removes or keeps its partial file, as it does
        stdout = ""
    result = _result(stdout)
    if result is None:
        if process.returncode in (-signal.SIGINT, EXIT_INTERRUPTED):
            print("interrupted: the files already whole are kept; run fetch-weights again to go on", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(
            f"error: fetch-weights: {FETCH_MODULE} in {shlex.join(command.prefix)} ended without a result "
            f"(exit code {process.returncode}; its stderr is above)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if not result.get("ok"):
        print(f"error: fetch-weights: {result.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    print(report(result, args.dir))
    return EXIT_OK


def _result(stdout: str) -> dict[str, Any] | None:
    lines = stdout.strip().splitlines()
    try:
        value = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def report(result: dict[str, Any], directory: str | None) -> str:
    """Where each file is, what its check found, and how the worker finds them (what to pass when it does not)."""
    where = result["directory"] or f"the Hugging Face cache ({result['cache']})"
    downloaded = result["downloaded_files"]
    lines = [
        f"fetched {result['fetched_files']} files into {where}: {downloaded} downloaded "
        f"({_size(result['downloaded_bytes'])}), {result['fetched_files'] - downloaded} already there",
        "checked with the loaders:",
    ]
    width = max(len(entry["name"]) for entry in result["files"])
    for entry in result["files"]:
        lines.append(f"  {entry['name'].ljust(width)}  {entry['path']}")
        lines.append(f"  {''.ljust(width)}  {entry['check']}")
    elsewhere = [entry for entry in result["files"] if not entry["found_is_fetched"]]
    if not elsewhere:
        if directory:
            lines.append(
                "a worker started from this folder finds them with no option (a checkpoint folder it searches)"
            )
        else:
            lines.append("the worker finds them with no option (it searches the Hugging Face cache)")
        return "\n".join(lines)
    for entry in elsewhere:
        if entry["found"]:
            lines.append(
                f"note: the worker finds another {WHAT[entry['name']][0]} first: {entry['found']} "
                f"({entry['found_at']}), not the one fetched"
            )
    lines.append("to use the fetched files, pass them to the worker:")
    lines.append("  command line:  " + " ".join(f"{WHAT[e['name']][1]} {shlex.quote(e['path'])}" for e in elsewhere))
    lines.append("  Python API:    " + ", ".join(f"{WHAT[e['name']][2]}={e['path']!r}" for e in elsewhere))
    lines.append("  environment:   " + " ".join(f"{WHAT[e['name']][3]}={shlex.quote(e['path'])}" for e in elsewhere))
    if directory:
        lines.append("  (or fetch into ./ckpts or ./instantmesh/ckpts of the folder the worker starts from)")
    return "\n".join(lines)


def _size(size: int) -> str:
    """Bytes in the largest unit that keeps the number at or above 1 (decimal units, as huggingface_hub shows)."""
    for power, unit in ((3, "GB"), (2, "MB"), (1, "kB")):
        if size >= 1000**power:
            return f"{size / 1000**power:.1f} {unit}"
    return f"{size} B"
