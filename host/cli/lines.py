"""What the command line prints beyond progress: the lines of a finished object, the session's help, sizes."""

from __future__ import annotations

from collections.abc import Sequence

from rpcworker.wire.messages import STEPS_RANGE

from ..api.progress import ProgressPrinter
from .display import printable, shown
from .objects import ObjectResult


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
        printer.print(f"  FAILED: {printable(result.error)}")
    for warning in result.warnings:
        printer.print(f"  warning: {printable(warning)}")


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
                printable(r.name),
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
