"""One object through the worker, shared by the batch CLI and the interactive session.

Finding inputs (images, folders, ``NAME_mask.png`` masks), naming outputs, preparing the input in the
host, views and mesh in the worker, then the contact sheet. pillow/numpy/trimesh are imported only when
preprocessing or a contact sheet is asked for, so ``--no-preprocess`` without sheets runs on msgspec alone.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rpcworker.wire.errors import RpcError
from rpcworker.wire.messages import MODEL_NAMES

from ..api.facade import InstantMeshWorker
from ..api.options import DEFAULT_MAP_FORMAT, MeshOptions, PrepareOptions, ViewOptions
from ..api.preparing import prepare_image
from ..api.progress import ProgressPrinter
from ..api.results import Mesh
from ..images.file_kinds import input_file_problem
from ..images.mask_files import MASK_SUFFIX, mask_path_for
from ..worker.errors import RequestTimeout, WorkerCrashed

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ObjectInput:
    name: str
    image: Path
    mask: Path | None = None
    problem: str | None = None
    """Why this input cannot be processed (e.g. the path does not exist); it is then reported as failed."""


@dataclass
class Settings:
    """What the batch command and the session make of each object: the API's input, view and mesh options
    (one type from the CLI to the wire), and the host's own steps around them."""

    out_dir: Path
    views: ViewOptions = field(default_factory=ViewOptions)
    mesh: MeshOptions = field(default_factory=lambda: MeshOptions(format=DEFAULT_MAP_FORMAT))
    preprocess: bool = True
    preparation: PrepareOptions = field(default_factory=PrepareOptions)
    """How the input is prepared when ``preprocess`` is on: the API's own (Any6D's is 0.80, flipped, white)."""
    contact_sheet: bool = True
    overwrite: bool = False

    @property
    def format(self) -> str:
        """The mesh format, which names the outputs (``NAME.FORMAT``)."""
        return self.mesh.format or DEFAULT_MAP_FORMAT


SLOW_PREPARATION_PIXELS = 16 * 1024 * 1024
"""Inputs above this many pixels take seconds to prepare in the host: a line says so before it starts."""


@dataclass(frozen=True)
class ObjectOutputs:
    prepared: Path
    grid: Path
    mesh: Path
    sheet: Path

    @classmethod
    def of(cls, out_dir: Path, name: str, fmt: str) -> ObjectOutputs:
        return cls(
            out_dir / f"{name}_input.png",
            out_dir / f"{name}_views.png",
            out_dir / f"{name}.{fmt}",
            out_dir / f"{name}_sheet.png",
        )

    def any_exists(self) -> bool:
        return any(p.exists() for p in (self.prepared, self.grid, self.mesh, self.sheet))

    def discard_unfinished(self) -> None:
        """After an interrupted object: without its mesh the object is not done, so its views grid is debris
        (a later run redoes the object and writes the grid again). Call once the worker has stopped, so no
        write of the cancelled request can land afterwards."""
        if not self.mesh.exists():
            self.grid.unlink(missing_ok=True)


@dataclass
class ObjectResult:
    name: str
    source: Path
    status: str
    """``ok``, ``skipped`` (mesh exists), ``failed``, ``cancelled`` or ``not run``."""
    views_s: float | None = None
    mesh_s: float | None = None
    vertices: int | None = None
    faces: int | None = None
    mesh_path: Path | None = None
    grid_path: Path | None = None
    sheet_path: Path | None = None
    outline: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def shown(path: str | os.PathLike[str]) -> str:
    """A path as people want to read it: relative to the working directory when it lies inside it."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


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


def collect_inputs(arguments: Sequence[str | os.PathLike[str]]) -> tuple[list[ObjectInput], list[str]]:
    """Images named directly or found in folders (not recursive, sorted), each with its mask if any.

    Returns the objects and notes for the person (e.g. a folder without images). Objects get unique
    names (the file stem, then ``stem-2`` ...), stable from run to run, so resuming finds their outputs.
    """
    objects: list[ObjectInput] = []
    notes: list[str] = []
    used: set[str] = set()

    def unique(stem: str) -> str:
        name, n = stem, 2
        while name in used:
            name, n = f"{stem}-{n}", n + 1
        used.add(name)
        return name

    for argument in arguments:
        path = Path(os.path.expanduser(os.fspath(argument)))
        if path.is_dir():
            names = {p.name for p in path.iterdir()}
            images = sorted(p for p in path.iterdir() if p.is_file() and _is_image(p) and not _is_mask(p, names))
            if not images:
                notes.append(f"{shown(path)}: no .png/.jpg images in this folder")
            for image in images:
                objects.append(ObjectInput(unique(image.stem), image, mask_path_for(image), input_file_problem(image)))
        elif os.path.lexists(path):  # a file, a FIFO, a device: its first bytes say whether it is an image
            objects.append(ObjectInput(unique(path.stem), path, mask_path_for(path), input_file_problem(path)))
        else:
            objects.append(ObjectInput(unique(path.stem or "input"), path, None, f"{path}: no such file or folder"))
    return objects, notes


def rembg_problem(item: ObjectInput, settings: Settings) -> str | None:
    """The one line saying that this input needs rembg, which the host's Python lacks, with the command that
    installs it; None where it does not. Found before any worker starts, so the object fails at once and the
    others go on. Nothing is decoded where rembg is installed or the input has a mask file."""
    if not settings.preprocess or item.problem is not None:
        return None
    from ..images.preparation import RembgUnavailable, check_rembg_for

    try:
        check_rembg_for(
            os.path.abspath(item.image), item.mask, remove_background=settings.preparation.background_removal
        )
    except RembgUnavailable as exc:
        return str(exc)
    return None


def ensure_loaded(worker: InstantMeshWorker, printer: ProgressPrinter) -> dict[str, float]:
    """Loads the models that are not loaded yet, so the first object's timings are as warm as the rest.

    Returns the seconds per model loaded now (empty when everything was already warm).
    """
    status = worker.status()
    missing = [m for m in MODEL_NAMES if m not in status.loaded]
    if not missing:
        return {}
    result = worker.load(missing, on_progress=printer)
    printer.end_line()
    return result.load_seconds


def run_object(
    worker: InstantMeshWorker,
    item: ObjectInput,
    settings: Settings,
    outputs: ObjectOutputs,
    printer: ProgressPrinter,
) -> ObjectResult:
    """Prepare, views, mesh, sheet. Problems with this object become a ``failed`` result; Ctrl-C
    (KeyboardInterrupt, after the request was cancelled on the worker) and WorkerStartError propagate.
    """
    result = ObjectResult(item.name, item.image, "failed")
    prepared = prepare_input(item, settings, outputs, printer, result)
    if prepared is None:
        return result
    image, staged = prepared
    try:
        started = time.monotonic()
        views = worker.generate_views(  # the input is prepared already (staged), or was asked to go as it is
            image,
            view_options=settings.views,
            save_grid=outputs.grid,
            overwrite=True,
            on_progress=printer,
            prepare=False,
        )
        result.views_s = time.monotonic() - started
        printer.end_line()
        started = time.monotonic()
        mesh = worker.reconstruct(
            views, outputs.mesh, mesh_options=settings.mesh, overwrite=settings.overwrite, on_progress=printer
        )
        result.mesh_s = time.monotonic() - started
        printer.end_line()
    except (RpcError, WorkerCrashed, RequestTimeout, OSError) as exc:
        printer.end_line()
        result.error = describe_failure(exc)
        drop_staged(staged)
        return result
    except BaseException:
        drop_staged(staged)
        raise
    return finish_object(result, item, settings, outputs, image, staged, mesh, views.grid_path)


def prepare_input(
    item: ObjectInput, settings: Settings, outputs: ObjectOutputs, printer: ProgressPrinter, result: ObjectResult
) -> tuple[Path, Path | None] | None:
    """The image the worker should read and the hidden staged file holding it (None without preprocessing);
    None when the object fails here (``result.error`` says why). The input is prepared by the API's own
    ``prepare_image``, so the worker reads the very PNG the API would send it for this photo. The staged file
    becomes NAME_input.png only once the mesh is made (`finish_object`), so Ctrl-C or a crash never leaves it
    behind."""
    if item.problem:
        result.error = item.problem
        return None
    if not settings.preprocess:
        if item.mask is not None:
            result.warnings.append(f"{shown(item.mask)} ignored (--no-preprocess)")
        return item.image, None
    from ..images.preparation import image_size

    dims = image_size(item.image)
    if dims is not None and dims[0] * dims[1] > SLOW_PREPARATION_PIXELS:
        printer.print(f"  preparing a large input ({dims[0]}x{dims[1]}) ...")
    staged = outputs.prepared.with_name(f".{outputs.prepared.name}.partial-{os.getpid()}.png")
    try:
        prepared = prepare_image(item.image, settings.preparation)
        outputs.prepared.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(prepared.png)
    except (RpcError, OSError) as exc:
        drop_staged(staged)
        result.error = exc.message if isinstance(exc, RpcError) else describe_failure(exc)
        return None
    result.outline = prepared.outline
    return staged, staged


def drop_staged(staged: Path | None) -> None:
    if staged is not None:
        staged.unlink(missing_ok=True)


def finish_object(
    result: ObjectResult,
    item: ObjectInput,
    settings: Settings,
    outputs: ObjectOutputs,
    image: Path,
    staged: Path | None,
    mesh: Mesh,
    grid_path: str | None,
) -> ObjectResult:
    """The mesh is written: the staged input takes its final name, the result is filled, the sheet drawn."""
    if staged is not None:
        _match_permissions(staged, Path(mesh.path))
        try:
            os.replace(staged, outputs.prepared)
        except OSError as exc:
            drop_staged(staged)
            result.error = describe_failure(exc)
            return result
        image = outputs.prepared
    result.status = "ok"
    result.grid_path = Path(grid_path) if grid_path else None
    result.mesh_path = Path(mesh.path)
    result.vertices, result.faces = mesh.num_vertices, mesh.num_faces
    if settings.contact_sheet:
        result.sheet_path = _sheet(result, item, settings, outputs, image, mesh)
    return result


def _sheet(
    result: ObjectResult, item: ObjectInput, settings: Settings, outputs: ObjectOutputs, image: Path, mesh: Mesh
) -> Path | None:
    """The contact sheet; a failure here is a warning, the mesh itself is fine."""
    from ..images.contact_sheet import ContactSheetError, write_contact_sheet

    notes = [
        f"input {shown(item.image)}" + (f" (outline: {result.outline})" if result.outline else ""),
        f"seed {settings.views.seed}, {settings.views.num_inference_steps} steps",
        f"{result.vertices} vertices, {result.faces} faces",
    ]
    try:
        return write_contact_sheet(
            outputs.sheet,
            title=item.name,
            input_image=image,
            views_grid=result.grid_path,
            mesh_path=result.mesh_path,
            notes=notes,
            model_label=mesh.model_label,
            weights=mesh.weights,
        )
    except (ContactSheetError, OSError) as exc:
        result.warnings.append(f"contact sheet not written: {exc}")
        return None


def _match_permissions(path: Path, like: Path) -> None:
    """Host-written files get the mode of the worker's outputs beside them (mkstemp makes 0600 otherwise)."""
    with contextlib.suppress(OSError):
        os.chmod(path, like.stat().st_mode & 0o777)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        return f"{exc.name}: {exc.message}"
    if isinstance(exc, WorkerCrashed):
        return str(exc).splitlines()[0] + " (the worker restarts for the next object)"
    return f"{type(exc).__name__}: {exc}"
