"""What a batch of objects gives back, one outcome per object (failures listed, not raised), and where its files go.

Shared by ``InstantMeshWorker.map``, ``WorkerPool.map`` (local workers) and ``host.scale.ray.map_images`` (Ray
actors), so all report alike and name, place and check their outputs alike: inside ``out_dir``, every name fitting
the file system, and never on one of the map's own inputs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpcworker.wire.errors import RpcError

from ..worker.errors import HostError
from .naming import UniqueNames, object_name_budget, plain_name_problem
from .options import DEFAULT_MAP_FORMAT, MeshOptions
from .results import Mesh


@dataclass(frozen=True)
class ObjectOutcome:
    """One object of a map: ``mesh`` when it worked, else ``error`` (one line) and ``error_code``."""

    index: int
    """Position of the image in the list given to map."""
    name: str
    mesh: Mesh | None
    error: str | None = None
    error_code: str | None = None
    """The protocol's error name (``input_not_found``...) or the host error's class name (``WorkerCrashed``)."""
    worker: str = ""
    """Which worker made it (``0``, ``1``... in a pool; the Ray actor's node and pid under Ray)."""
    attempts: int = 1
    """2 when the first worker crashed or stalled and the object was redone on another."""
    grid_path: str | None = None
    views_timings: dict[str, float] = field(default_factory=dict)
    """The views' timings (``diffusion_s``, ``batch_size``...), where the map kept them."""
    latency_s: float | None = None
    """Host wall seconds from sending the object's first request to its mesh's answer (one worker's map)."""

    @property
    def ok(self) -> bool:
        return self.mesh is not None


@dataclass(frozen=True)
class ObjectTarget:
    """Where one object's files go."""

    name: str
    mesh: Path
    grid: Path | None
    companions: tuple[Path, ...] = ()
    """A textured OBJ's .mtl and .png, written beside the mesh."""

    def files(self) -> list[Path]:
        """Every file the object's requests write."""
        return [*self.companions, self.mesh, *([self.grid] if self.grid is not None else [])]


TEXTURE_COMPANION_SUFFIXES = (".mtl", ".png")
"""What a textured OBJ writes beside ``NAME.obj`` (protocol.md, reconstruct): ``NAME.mtl`` and ``NAME.png``."""


def mesh_companions(mesh: Path, format: str | None, texture_map: bool | None) -> tuple[Path, ...]:
    """The files a reconstruct writes beside ``mesh``: a textured OBJ's material and texture, else none."""
    fmt = format or mesh.suffix.lstrip(".").lower()
    if not texture_map or fmt != "obj":
        return ()
    stem = os.path.splitext(os.fspath(mesh))[0]
    return tuple(Path(stem + suffix) for suffix in TEXTURE_COMPANION_SUFFIXES)


class OutputIsAnInput(ValueError):
    """An output of a run would replace one of that run's inputs (or a file that is one, through a link)."""

    def __init__(self, output: Path, what: str, source: Path) -> None:
        self.output, self.what, self.source = output, what, source
        also = "" if os.path.abspath(source) == os.path.abspath(output) else f" (it leads to the input {source})"
        super().__init__(
            f"{output}, {what}, is an input of this run{also}: writing it would destroy the input; "
            "choose another output folder (or move the input)"
        )


def refuse_outputs_on_inputs(inputs: Iterable[Path], outputs: Iterable[tuple[Path, str]]) -> None:
    """Raises OutputIsAnInput (one line) when an output path is, or resolves to (a symlink, a hard link), one of
    ``inputs``; ``outputs`` pairs each path with what it is (``the views grid of mug``). Checked before anything
    is written: an input is never overwritten, not even with overwrite."""
    seen: dict[tuple[int, int], Path] = {}
    for path in inputs:
        with contextlib.suppress(OSError, ValueError):
            info = os.stat(path)
            seen.setdefault((info.st_dev, info.st_ino), path)
    if not seen:
        return
    for path, what in outputs:
        try:
            info = os.stat(path)
        except (OSError, ValueError):
            continue  # nothing there: not an input
        source = seen.get((info.st_dev, info.st_ino))
        if source is not None:
            raise OutputIsAnInput(path, what, source)


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(one-line message, code) for an exception an object's work raised."""
    if isinstance(exc, RpcError):
        return f"{exc.name}: {exc.message}", exc.name
    if isinstance(exc, HostError):
        return str(exc).splitlines()[0], type(exc).__name__
    return f"{type(exc).__name__}: {exc}", type(exc).__name__


def map_targets(
    images: Sequence[Any],
    out_dir: str | os.PathLike[str],
    mesh: MeshOptions,
    *,
    save_grids: bool = True,
    names: Sequence[str] | None = None,
) -> list[ObjectTarget]:
    """``object_targets`` for a map whose meshes ``mesh`` describes (its format, DEFAULT_MAP_FORMAT unless chosen;
    a texture map's files): one place for the map of the worker, the pool and Ray."""
    return object_targets(
        images,
        out_dir,
        format=mesh.format or DEFAULT_MAP_FORMAT,
        save_grids=save_grids,
        names=names,
        texture_map=mesh.texture_map,
    )


def object_targets(
    images: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    format: str = "obj",
    save_grids: bool = True,
    names: Sequence[str] | None = None,
    texture_map: bool | None = False,
) -> list[ObjectTarget]:
    """Output paths per image: ``NAME.FORMAT`` and ``NAME_views.png`` (and a textured OBJ's ``NAME.mtl`` and
    ``NAME.png``). NAME is the file stem for paths, ``object-NNNN`` for in-memory images, cut to fit the file
    system and made unique (``stem-2``...) in list order, so reruns match. ``names`` are used as given: one
    that is not a plain file name (folders, ``..``) or too long is refused (ValueError, one line), so every
    output stays inside ``out_dir``; so is an output that is one of the images (OutputIsAnInput)."""
    if names is not None and len(names) != len(images):
        raise ValueError(f"names has {len(names)} entries for {len(images)} images")
    directory = Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir))))
    budget = object_name_budget(directory)
    if names is not None:
        for index, given in enumerate(names):
            problem = plain_name_problem(given, budget)
            if problem is not None:
                raise ValueError(f"names[{index}] {given!r} {problem}")
    unique = UniqueNames(budget)
    targets = []
    for index, image in enumerate(images):
        if names is not None:
            stem = names[index]
        elif isinstance(image, (str, os.PathLike)):
            stem = Path(os.fspath(image)).stem or f"object-{index:04d}"
        else:
            stem = f"object-{index:04d}"
        name = unique.take(stem)
        grid = directory / f"{name}_views.png" if save_grids else None
        mesh = directory / f"{name}.{format}"
        targets.append(ObjectTarget(name, mesh, grid, mesh_companions(mesh, format, texture_map)))
    refuse_outputs_on_inputs(_input_files(images), _described(targets))
    return targets


def _input_files(images: Sequence[Any]) -> list[Path]:
    """The files a map reads: each image given as a path, and the mask beside it."""
    from ..images.mask_files import mask_path_for

    files = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            path = Path(os.path.abspath(os.path.expanduser(os.fspath(image))))
            files.append(path)
            mask = mask_path_for(path)
            if mask is not None:
                files.append(mask)
    return files


def _described(targets: Sequence[ObjectTarget]) -> list[tuple[Path, str]]:
    described = []
    for target in targets:
        described += [(path, f"the texture file of {target.name}") for path in target.companions]
        described.append((target.mesh, f"the mesh of {target.name}"))
        if target.grid is not None:
            described.append((target.grid, f"the views grid of {target.name}"))
    return described


def failures(outcomes: Sequence[ObjectOutcome]) -> list[ObjectOutcome]:
    return [outcome for outcome in outcomes if not outcome.ok]
