"""Checks made before any worker starts or model loads, so an option that cannot work is refused at once
with one line (``UsageProblem``, exit code 2)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..api.facade import InstantMeshWorker
from ..api.preparing import IMAGES_EXTRA_INSTALL, missing_image_libraries
from .arguments import UsageProblem
from .display import shown
from .inputs import ObjectInput, OutputOnInput, refuse_outputs_on_inputs
from .objects import ObjectOutputs, Settings
from .out_files import remove_killed_hosts_files
from .report import REPORT_DIR


def check_host_libraries(settings: Settings) -> None:
    """Preprocessing and contact sheets need pillow and numpy in the host's own environment."""
    wanted = [
        what for what, on in (("preprocessing", settings.preprocess), ("contact sheets", settings.contact_sheet)) if on
    ]
    missing = missing_image_libraries()
    if wanted and missing:
        raise UsageProblem(
            f"{' and '.join(wanted)} need {' and '.join(missing)} in the host's Python ({sys.executable}): "
            f"{IMAGES_EXTRA_INSTALL}, or pass --no-preprocess --no-contact-sheet"
        )


def check_mcp_sdk() -> None:
    """``mcp`` needs the MCP SDK (the ``mcp`` extra), which needs Python 3.10+: refused at start, in one line."""
    if sys.version_info < (3, 10):
        raise UsageProblem(
            f"the mcp command needs Python 3.10 or newer (the MCP SDK does); this host runs Python {sys.version.split()[0]}"
        )
    if importlib.util.find_spec("mcp") is None:
        raise UsageProblem(
            f"the mcp command needs the MCP Python SDK in the host's Python ({sys.executable}): "
            "pip install 'instantmesh-rpc[mcp]'"
        )


def check_output_dir(out_dir: Path) -> None:
    """Creates the output folder and proves it writable, before any worker starts or model loads. Its path must be
    UTF-8: the worker's replies name the files written in it, and JSON carries nothing else. Then removes the
    temporary files that killed hosts left there (`remove_killed_hosts_files`)."""
    try:
        os.fspath(out_dir).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageProblem(
            f"--out {shown(out_dir)} is not a valid UTF-8 name, which the worker's replies could not carry; "
            "choose another folder"
        ) from None
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
    remove_killed_hosts_files(out_dir, (REPORT_DIR,))


def check_planned_outputs(
    objects: Sequence[ObjectInput],
    todo: Sequence[tuple[ObjectInput, ObjectOutputs]],
    settings: Settings,
    *,
    report: bool,
) -> None:
    """No file the run writes (an object's outputs, the report's) is one of its inputs, and none the worker writes
    is a symlink someone planted in --out (the worker would write through it; the host's own files replace one)."""
    for _, outputs in todo:
        for path in outputs.written_by_the_worker():
            if os.path.islink(path):
                raise UsageProblem(
                    f"{shown(path)} is a symlink; the worker would write through it, which the host never lets it "
                    "(remove it, or choose another --out)"
                )
    planned = [entry for item, outputs in todo for entry in outputs.described(item.name, settings.contact_sheet)]
    if report:
        from .report import report_files

        planned += report_files(settings.out_dir, [item.name for item in objects])
    try:
        refuse_outputs_on_inputs(objects, planned)
    except OutputOnInput as exc:
        raise UsageProblem(str(exc)) from None


CUDA_PROBE = "import importlib.util, sys\nif importlib.util.find_spec('torch') is None: print('no-torch')\nelse:\n import torch; print('yes' if torch.cuda.is_available() else 'no')"
CUDA_PROBE_TIMEOUT_S = 120.0


def check_cuda_before_start(worker: InstantMeshWorker, requested: str | None, backend: str) -> None:
    """--device cuda with a worker env whose torch sees no CUDA is refused before the worker starts."""
    if not requested or not requested.startswith("cuda") or backend != "instantmesh":
        return
    command = worker.client.command
    try:
        answer = subprocess.run(
            [*command.interpreter(), "-c", CUDA_PROBE],
            env=command.environment(),
            cwd=command.start_directory(),
            capture_output=True,
            text=True,
            timeout=CUDA_PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return  # the worker's own start reports an interpreter that cannot run
    if answer == "no":
        raise UsageProblem(
            f"--device {requested}: torch in the worker environment sees no CUDA device; use --device cpu (or omit --device)"
        )


def check_device(worker: InstantMeshWorker, requested: str | None) -> None:
    """--device cuda on a worker that answers with another device (e.g. the mock backend) is refused too."""
    if requested and requested.startswith("cuda") and not worker.info.device.startswith("cuda"):
        raise UsageProblem(
            f"--device {requested}: the worker has no CUDA (its device is {worker.info.device}); use --device cpu"
        )
