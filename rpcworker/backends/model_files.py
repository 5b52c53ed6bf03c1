"""Which weight files the real backend loads: the official ones (found or given), or the tiny preset."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..options import WorkerOptions
from ..wire.messages import DEFAULT_VIEW_SIZE

log = logging.getLogger("rpcworker.instantmesh")

TINY_VIEW_SIZE = 32
"""Side of each view of the tiny preset (its networks are tiny too)."""


class WeightsMissing(ValueError):
    """The official weights the worker was asked for are not found, or the Zero123++ folder found has a component
    without safetensors weights (pickles are never loaded); the message (one line) names every place searched for
    each missing file, or the component, and how to get it. The worker ends with it at start
    (``WEIGHTS_MISSING_LINE``)."""


@dataclass(frozen=True)
class ModelFiles:
    zero123plus: Path
    whitebg_unet: Path
    lrm: Path
    lrm_config: Path
    label: str
    weights: Literal["official", "tiny"]
    view_size: int
    """Side of each generated view (320 officially; the grid is 2 views wide and 3 high)."""


def resolve_model_files(options: WorkerOptions) -> ModelFiles:
    """The files to load: the official weights (found or given), or the tiny preset.

    ``--preset official`` (the default) makes missing weights WeightsMissing; ``--preset auto`` (the CLI's
    choice when the person names no preset) uses the tiny preset instead, unless a weight path was named. A
    Zero123++ folder found with a component whose weights are only pickles is WeightsMissing with any preset:
    the person has the weights, in a form that is never loaded (``instantmesh.safetensors_only``).
    """
    from instantmesh.lrm.config import preset_path
    from instantmesh.safetensors_only import PickledWeights, check_safetensors
    from instantmesh.weights import ZERO123PLUS_LOADED, WeightsNotFound, resolve_weights

    preset = options.preset
    explicit = any((options.zero123plus, options.unet, options.lrm))
    if preset != "tiny":
        try:
            paths = resolve_weights(options.zero123plus, options.unet, options.lrm, root=options.weights_root)
            try:
                check_safetensors(paths.zero123plus, ZERO123PLUS_LOADED)
            except PickledWeights as exc:
                raise WeightsMissing(str(exc)) from exc
            config = Path(options.config) if options.config else preset_path("instant-mesh-large")
            label = f"official InstantMesh ({paths.lrm.name})"
            return ModelFiles(
                paths.zero123plus,
                paths.whitebg_unet,
                paths.lrm,
                config,
                label,
                "official",
                options.view_size or DEFAULT_VIEW_SIZE,
            )
        except WeightsNotFound as exc:
            if preset == "official" or explicit:
                raise WeightsMissing(str(exc)) from exc
            log.warning("using the tiny preset with random weights: %s", exc)
    from instantmesh.tiny import TINY_LABEL, ensure_tiny_weights

    tiny = ensure_tiny_weights()
    return ModelFiles(
        tiny.paths.zero123plus,
        tiny.paths.whitebg_unet,
        tiny.paths.lrm,
        tiny.config,
        TINY_LABEL,
        "tiny",
        options.view_size or TINY_VIEW_SIZE,
    )
