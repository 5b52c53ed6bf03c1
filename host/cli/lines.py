"""What the command line prints beyond progress: the lines of a finished object, the session's help, sizes."""

from __future__ import annotations

from rpcworker.wire.messages import STEPS_RANGE

from ..api.progress import ProgressPrinter
from .objects import ObjectResult, shown


def report_object(printer: ProgressPrinter, result: ObjectResult) -> None:
    """The lines printed when an object finishes: where each output went and what it took."""
    if result.status == "ok":
        if result.grid_path is not None:
            printer.print(f"  views {result.views_s:6.1f} s -> {shown(result.grid_path)}")
        printer.print(
            f"  mesh  {result.mesh_s:6.1f} s -> {shown(result.mesh_path or '')} ({result.vertices} vertices, {result.faces} faces)"
        )
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
