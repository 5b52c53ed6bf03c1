"""The Zero123++ components that diffusers and transformers load are read from safetensors only, checked first.

Their ``from_pretrained`` falls back to a pickled ``.bin`` when a component has no safetensors, and under
upstream's pins (diffusers 0.20.2, transformers 4.34.1, torch 2.1) it reads one with a plain ``torch.load``: the
pickle runs whatever code it names. So every component goes to its loader with ``use_safetensors=True`` (diffusers
0.20.2 and transformers 4.34.1 take it, as the newest do: neither then looks at a pickle), and before any loader
is called each component must hold ``.safetensors`` weights; one without is refused in one line naming its folder
and the command that fetches safetensors. A pickle beside safetensors is never opened. Torch-free: the worker
checks the official folder at start, before it imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .weights import FETCH_COMMAND, SAFETENSORS_SUFFIXES, WEIGHT_SUFFIXES, is_fp16_variant

PICKLE_SUFFIXES = (".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Weights saved with pickle: named in the refusal when a component has nothing else."""


class PickledWeights(ValueError):
    """A component without safetensors weights (pickled ones, or none): one line naming its folder, what it holds,
    and how to get safetensors."""


def safetensors_names(component: Path) -> list[str]:
    """The component folder's safetensors files (and sharded index), the only weights its loader may open."""
    if not component.is_dir():
        return []
    return sorted(p.name for p in component.iterdir() if p.name.endswith(SAFETENSORS_SUFFIXES))


def safetensors_variant(component: Path, prefer_fp16: bool) -> str | None:
    """'fp16' when the component's safetensors are only the fp16 variant, or both and fp16 is preferred (the
    ``variant`` its loader is asked for; pickles play no part)."""
    names = safetensors_names(component)
    fp16 = [name for name in names if is_fp16_variant(name)]
    if fp16 and (prefer_fp16 or len(fp16) == len(names)):
        return "fp16"
    return None


def check_safetensors(folder: Path, components: Iterable[str]) -> None:
    """PickledWeights for the first of `components` (subfolders of the pipeline `folder`) without safetensors."""
    for name in components:
        component = folder / name
        if safetensors_names(component):
            continue
        if not component.is_dir():
            held = "is missing"
        else:
            pickles = sorted(p.name for p in component.iterdir() if p.name.endswith(WEIGHT_SUFFIXES + PICKLE_SUFFIXES))
            held = (
                f"has its weights only as pickles ({', '.join(pickles)}), which are never loaded (unpickling runs code)"
                if pickles
                else "has no weights file"
            )
        raise PickledWeights(
            f"the Zero123++ component {component} {held}; its weights are read from *.safetensors only: get them "
            f"with `{FETCH_COMMAND}` (or convert the folder to safetensors in a trusted environment)"
        )
