"""A run's inputs: images named or found in folders, each with its mask, never a file an earlier run wrote.

Each object is named after its file, cut so that every output's name fits the file system
(`host.api.naming`), and `refuse_outputs_on_inputs` refuses, before any work, a run one of whose outputs would
land on one of its inputs (``batch photos --out photos`` with a texture ``mug.png`` over the photo ``mug.png``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rpcworker.wire.messages import MESH_FORMATS

from ..api import outcome
from ..api.naming import LONGEST_SUFFIX, NAME_MAX_DEFAULT, UniqueNames
from ..images.file_kinds import input_file_problem
from ..images.mask_files import MASK_SUFFIX, mask_path_for
from .display import shown

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PREPARED_ENDING, GRID_ENDING, SHEET_ENDING = "_input", "_views", "_sheet"
"""What an object's own images add to its name (``NAME_input.png``...); a folder's file so named beside a mesh
``NAME.obj`` was written by an earlier run and is never taken for an input."""


@dataclass(frozen=True)
class ObjectInput:
    name: str
    image: Path
    mask: Path | None = None
    problem: str | None = None
    """Why this input cannot be processed (e.g. the path does not exist); it is then reported as failed."""


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _is_mask(path: Path, siblings: set[str]) -> bool:
    """``X_mask.png`` is a mask only when an image ``X.*`` sits beside it; otherwise it is an image."""
    if not path.stem.endswith(MASK_SUFFIX):
        return False
    base = path.stem[: -len(MASK_SUFFIX)]
    return any(f"{base}{suffix}" in siblings for suffix in IMAGE_SUFFIXES) or any(
        f"{base}{suffix.upper()}" in siblings for suffix in IMAGE_SUFFIXES
    )


def _earlier_output(name: str, siblings: set[str]) -> bool:
    """``NAME_input.png``, ``NAME_views.png`` or ``NAME_sheet.png`` beside a mesh ``NAME.FORMAT``, or the texture
    ``NAME.png`` beside ``NAME.mtl`` and ``NAME.obj``: a file an earlier run wrote, not a photo."""
    stem, ext = os.path.splitext(name)
    if ext.lower() != ".png":
        return False
    for ending in (PREPARED_ENDING, GRID_ENDING, SHEET_ENDING):
        base = stem[: -len(ending)]
        if stem.endswith(ending) and any(f"{base}.{fmt}" in siblings for fmt in MESH_FORMATS):
            return True
    return f"{stem}.mtl" in siblings and f"{stem}.obj" in siblings


def _listing(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def collect_inputs(
    arguments: Sequence[str | os.PathLike[str]], name_budget: int = NAME_MAX_DEFAULT - len(LONGEST_SUFFIX)
) -> tuple[list[ObjectInput], list[str]]:
    """Images named directly or found in folders (not recursive, sorted), each with its mask if any.

    Returns the objects and notes for the person (e.g. a folder without images). Objects get unique
    names (the file stem, cut to ``name_budget`` bytes so every output's name fits, then ``stem-2`` ...),
    stable from run to run, so resuming finds their outputs. Files an earlier run wrote (`_earlier_output`)
    are left out, with a note: no run reads its own outputs as inputs.
    """
    objects: list[ObjectInput] = []
    notes: list[str] = []
    names = UniqueNames(name_budget)
    listings: dict[Path, set[str]] = {}

    def siblings(folder: Path) -> set[str]:
        if folder not in listings:
            listings[folder] = _listing(folder)
        return listings[folder]

    for argument in arguments:
        path = Path(os.path.expanduser(os.fspath(argument)))
        try:
            info = os.stat(path)
        except (OSError, ValueError) as exc:
            why = "no such file or folder" if isinstance(exc, FileNotFoundError) else _reason(exc)
            problem = f"{shown(path)}: {why}"
            objects.append(ObjectInput(names.take(path.stem or "input"), path, None, problem))
            continue
        if stat.S_ISDIR(info.st_mode):
            found = siblings(path)
            candidates = sorted(path / name for name in found if _is_image(Path(name)) and os.path.isfile(path / name))
            images = [p for p in candidates if not _is_mask(p, found) and not _earlier_output(p.name, found)]
            earlier = sum(_earlier_output(p.name, found) for p in candidates)
            if earlier:
                notes.append(
                    f"{shown(path)}: {earlier} file(s) written by an earlier run left out "
                    "(NAME_input/_views/_sheet.png beside a mesh NAME.obj, a texture beside NAME.mtl)"
                )
            if not images and not earlier:
                notes.append(f"{shown(path)}: no .png/.jpg images in this folder")
            for image in images:
                objects.append(
                    ObjectInput(names.take(image.stem), image, mask_path_for(image), input_file_problem(image))
                )
        elif not stat.S_ISREG(info.st_mode):
            problem = f"{shown(path)}: not a regular file (a FIFO, device or socket)"
            objects.append(ObjectInput(names.take(path.stem or "input"), path, None, problem))
        elif _earlier_output(path.name, siblings(path.parent)):
            notes.append(f"{shown(path)} left out: an earlier run wrote it (its mesh is beside it)")
        else:
            objects.append(ObjectInput(names.take(path.stem), path, mask_path_for(path), input_file_problem(path)))
    return objects, notes


def _reason(exc: OSError | ValueError) -> str:
    """Why a path cannot be looked at (``File name too long``, ``embedded null byte``...)."""
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def refuse_outputs_on_inputs(objects: Sequence[ObjectInput], planned: Iterable[tuple[Path, str]]) -> None:
    """Raises `OutputOnInput` (one line for the person) when a file the run would write (``planned``: each path
    with what it is) is, or leads to, one of the run's images or masks."""
    inputs = [path for item in objects if not item.problem for path in (item.image, item.mask) if path is not None]
    try:
        outcome.refuse_outputs_on_inputs(inputs, planned)
    except outcome.OutputIsAnInput as exc:
        also = "" if exc.source == exc.output else f" (it leads to {shown(exc.source)})"
        raise OutputOnInput(
            f"{shown(exc.output)}, {exc.what}, is an input of this run{also}: writing it would destroy the input; "
            "choose another --out, or move the input (delete it if an earlier run of ours wrote it)"
        ) from None


class OutputOnInput(Exception):
    """A run refused before any work: one of its outputs is one of its inputs."""
