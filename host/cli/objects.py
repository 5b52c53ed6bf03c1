"""One object through the worker, shared by the batch CLI and the interactive session.

Naming outputs, preparing the input in the host (staged under a hidden name in ``--out``), views and mesh in
the worker, then the contact sheet; the inputs are found by `host.cli.inputs`. pillow/numpy/trimesh are imported
only when preprocessing or a contact sheet is asked for, so ``--no-preprocess`` without sheets runs on msgspec
alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from rpcworker.wire.errors import RpcError
from rpcworker.wire.messages import MODEL_NAMES

from ..api.facade import InstantMeshWorker
from ..api.naming import name_max
from ..api.options import DEFAULT_MAP_FORMAT, MeshOptions, PrepareOptions, ViewOptions
from ..api.outcome import mesh_companions
from ..api.preparing import prepare_image
from ..api.progress import ProgressPrinter
from ..api.results import Mesh
from ..worker.errors import RequestTimeout, WorkerCrashed
from .display import printable, shown
from .inputs import GRID_ENDING, PREPARED_ENDING, SHEET_ENDING, ObjectInput
from .inputs import collect_inputs as collect_inputs
from .out_files import commit, out_folder, stage

ImageSent = Union[Path, bytes]
"""A path the worker reads, or the file's bytes where its name could not travel (not UTF-8)."""


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

    def outputs(self, name: str) -> ObjectOutputs:
        """The files object ``name`` gets in ``out_dir``."""
        return ObjectOutputs.of(self.out_dir, name, self.format, bool(self.mesh.texture_map))


SLOW_PREPARATION_PIXELS = 16 * 1024 * 1024
"""Inputs above this many pixels take seconds to prepare in the host: a line says so before it starts."""


@dataclass(frozen=True)
class ObjectOutputs:
    prepared: Path
    grid: Path
    mesh: Path
    sheet: Path
    companions: tuple[Path, ...] = ()
    """A textured OBJ's .mtl and .png."""

    @classmethod
    def of(cls, out_dir: Path, name: str, fmt: str, texture_map: bool = False) -> ObjectOutputs:
        mesh = out_dir / f"{name}.{fmt}"
        return cls(
            out_dir / f"{name}{PREPARED_ENDING}.png",
            out_dir / f"{name}{GRID_ENDING}.png",
            mesh,
            out_dir / f"{name}{SHEET_ENDING}.png",
            mesh_companions(mesh, fmt, texture_map),
        )

    def described(self, name: str, contact_sheet: bool) -> list[tuple[Path, str]]:
        """Every file the object may write, with what it is (for the check that no output is an input)."""
        return [
            (self.prepared, f"the prepared input of {name}"),
            (self.grid, f"the views grid of {name}"),
            (self.mesh, f"the mesh of {name}"),
            *((path, f"the texture file of {name}") for path in self.companions),
            *([(self.sheet, f"the contact sheet of {name}")] if contact_sheet else []),
        ]

    def written_by_the_worker(self) -> list[Path]:
        """The files the worker writes (it follows a symlink at their names, as protocol.md says; the host's own
        files replace one)."""
        return [self.grid, *self.companions, self.mesh]

    def any_exists(self) -> bool:
        return any(os.path.lexists(path) for path, _ in self.described("", True))

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
    return finish_object(result, item, settings, outputs, staged, mesh, views.grid_path)


def prepare_input(
    item: ObjectInput, settings: Settings, outputs: ObjectOutputs, printer: ProgressPrinter, result: ObjectResult
) -> tuple[ImageSent, Path | None] | None:
    """The image the worker should read and the hidden staged file holding it (None without preprocessing);
    None when the object fails here (``result.error`` says why). The input is prepared by the API's own
    ``prepare_image``, so the worker reads the very PNG the API would send it for this photo. The staged file
    (made new under an unpredictable name that fits the file system, never through a symlink) becomes
    NAME_input.png only once the mesh is made (`finish_object`), so Ctrl-C or a crash never leaves it behind."""
    if item.problem:
        result.error = item.problem
        return None
    if not settings.preprocess:
        if item.mask is not None:
            result.warnings.append(f"{shown(item.mask)} ignored (--no-preprocess)")
        return _as_sent(item, result)
    from ..images.preparation import image_size

    dims = image_size(item.image)
    if dims is not None and dims[0] * dims[1] > SLOW_PREPARATION_PIXELS:
        printer.print(f"  preparing a large input ({dims[0]}x{dims[1]}) ...")
    try:
        prepared = prepare_image(item.image, settings.preparation)
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        with out_folder(settings.out_dir) as folder:
            staged = settings.out_dir / stage(folder, outputs.prepared.name, prepared.png, name_max(settings.out_dir))
    except (RpcError, OSError) as exc:
        result.error = exc.message if isinstance(exc, RpcError) else describe_failure(exc)
        return None
    result.outline = prepared.outline
    return staged, staged


def _as_sent(item: ObjectInput, result: ObjectResult) -> tuple[ImageSent, None] | None:
    """The input as it is: its path, or its bytes where the path is not UTF-8 (a JSON request cannot carry it)."""
    try:
        os.fspath(item.image).encode("utf-8")
    except UnicodeEncodeError:
        try:
            return item.image.read_bytes(), None
        except OSError as exc:
            result.error = describe_failure(exc)
            return None
    return item.image, None


def drop_staged(staged: Path | None) -> None:
    """Removes a staged input (its name in ``--out`` is unlinked; nothing is followed)."""
    if staged is not None:
        staged.unlink(missing_ok=True)


def finish_object(
    result: ObjectResult,
    item: ObjectInput,
    settings: Settings,
    outputs: ObjectOutputs,
    staged: Path | None,
    mesh: Mesh,
    grid_path: str | None,
) -> ObjectResult:
    """The mesh is written: the staged input takes its final name (with the mode of the worker's outputs beside
    it), the result is filled, the sheet drawn."""
    image = item.image
    if staged is not None:
        try:
            with out_folder(staged.parent) as folder:
                commit(folder, staged.name, outputs.prepared.name, _mode_of(Path(mesh.path)))
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
            title=printable(item.name),
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


def _mode_of(like: Path) -> int:
    """The mode of a worker's output, for the host's file beside it (staged files are made 0600)."""
    try:
        return like.stat().st_mode & 0o777
    except OSError:
        return 0o644


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        return f"{exc.name}: {exc.message}"
    if isinstance(exc, WorkerCrashed):
        return str(exc).splitlines()[0] + " (the worker restarts for the next object)"
    return f"{type(exc).__name__}: {exc}"
