"""Where an image's mask file is: ``NAME_mask.png`` beside ``NAME.ext``. Standard library only, so the CLI
finds masks without the ``images`` extra."""

from __future__ import annotations

import os
from pathlib import Path

MASK_SUFFIX = "_mask"


def mask_path_for(image_path: str | os.PathLike[str]) -> Path | None:
    """The ``NAME_mask.png`` beside ``NAME.ext``, if there is one (a NAME so long that the mask's name could
    not exist has none)."""
    path = Path(image_path)
    candidate = path.with_name(f"{path.stem}{MASK_SUFFIX}.png")
    return candidate if os.path.isfile(candidate) else None
