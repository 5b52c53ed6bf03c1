"""What a caller chooses for an object's input, views and mesh, as Structs typed with declared constraints.

``ViewOptions`` and ``MeshOptions`` travel whole from every face (``InstantMeshWorker``, ``WorkerPool``,
``host.scale.ray``, the CLI) to the two functions below that build the wire params, so the faces accept
the same options and refuse a bad value the same way. They live in the host, not the wire: the worker
receives params, and what the host adds around them (inputs, output paths, overwrite) is not an option.
``PrepareOptions`` is the host's own step before the wire (``host.api.preparing``), typed the same way.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec import Struct

from rpcworker.wire.errors import InvalidParams
from rpcworker.wire.messages import (
    DEFAULT_GUIDANCE,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    GenerateViewsParams,
    Guidance,
    ImageInput,
    MeshFormat,
    Orientation,
    ReconstructParams,
    Seed,
    Steps,
    ViewsSource,
)

from ..images.framing import UPSTREAM_FOREGROUND_RATIO, BackgroundRemoval, ForegroundRatio

DEFAULT_MAP_FORMAT: MeshFormat = "obj"
"""The mesh format of ``map`` when none is chosen: its outputs are named ``NAME.FORMAT`` before any is written."""


class ViewOptions(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the six views of an object are made (the diffusion's seed, steps and guidance)."""

    seed: Seed = DEFAULT_SEED
    num_inference_steps: Steps = DEFAULT_STEPS
    guidance_scale: Guidance = DEFAULT_GUIDANCE


class MeshOptions(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the mesh is written: ``format`` None takes it from the output path's extension."""

    format: MeshFormat | None = None
    texture_map: bool = False
    orientation: Orientation = "instantmesh"


class PrepareOptions(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the host prepares a photo for the worker: the object cut out (mask, alpha, a white backdrop or
    rembg), cropped, centred and scaled to ``foreground_ratio`` of the square, as upstream's run.py does.
    Any6D's crops are ``PrepareOptions(foreground_ratio=0.8, flip=True, white_background=True)``."""

    foreground_ratio: ForegroundRatio = UPSTREAM_FOREGROUND_RATIO
    flip: bool = False
    """Mirror the prepared input left-right."""
    white_background: bool = False
    """Paint outside the object white (an RGB input) instead of leaving it transparent (RGBA)."""
    background_removal: BackgroundRemoval = "auto"
    """The outline of a photo without a mask or alpha: ``auto`` (a white backdrop's heuristic, else rembg),
    ``rembg``, ``white`` (the heuristic only) or ``none`` (the whole image)."""


OptionsT = TypeVar("OptionsT", ViewOptions, MeshOptions, PrepareOptions)


def checked(options: OptionsT, **overrides: Any) -> OptionsT:
    """``options`` with the ``overrides`` that are not None, checked against the wire's constraints; a bad
    value raises InvalidParams (one line naming the field), as the worker would answer it."""
    given = {name: value for name, value in overrides.items() if value is not None}
    kind = type(options)
    try:
        return msgspec.convert({**msgspec.structs.asdict(options), **given}, kind)
    except msgspec.ValidationError as exc:
        raise InvalidParams(f"invalid {kind.__name__}: {exc}", {"detail": str(exc)}) from None


def view_options_of(
    options: ViewOptions | None = None,
    *,
    seed: int | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
) -> ViewOptions:
    """The views' options of a call: ``options`` (default: the defaults) with the keywords given."""
    return checked(
        options or ViewOptions(), seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale
    )


def mesh_options_of(
    options: MeshOptions | None = None,
    *,
    format: str | None = None,
    texture_map: bool | None = None,
    orientation: str | None = None,
) -> MeshOptions:
    """The mesh's options of a call: ``options`` (default: the defaults) with the keywords given."""
    return checked(options or MeshOptions(), format=format, texture_map=texture_map, orientation=orientation)


def map_mesh_options(
    options: MeshOptions | None = None,
    *,
    format: str | None = None,
    texture_map: bool | None = None,
    orientation: str | None = None,
) -> MeshOptions:
    """The mesh's options of a map: as ``mesh_options_of``, the format DEFAULT_MAP_FORMAT unless chosen."""
    chosen = mesh_options_of(options, format=format, texture_map=texture_map, orientation=orientation)
    return chosen if chosen.format is not None else msgspec.structs.replace(chosen, format=DEFAULT_MAP_FORMAT)


def views_params(
    image: ImageInput, grid_path: str | None, options: ViewOptions, overwrite: bool = False
) -> GenerateViewsParams:
    """The one place a generate_views request is built from the options."""
    return GenerateViewsParams(
        image,
        seed=options.seed,
        num_inference_steps=options.num_inference_steps,
        guidance_scale=options.guidance_scale,
        output_path=grid_path,
        overwrite=overwrite,
    )


def reconstruct_params(
    views: ViewsSource, output_path: str, options: MeshOptions, overwrite: bool = False
) -> ReconstructParams:
    """The one place a reconstruct request is built from the options."""
    return ReconstructParams(
        views,
        output_path,
        format=options.format,
        texture_map=options.texture_map,
        orientation=options.orientation,
        overwrite=overwrite,
    )
