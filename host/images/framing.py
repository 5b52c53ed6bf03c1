"""What a caller chooses about preparation, declared once: how much of the square the object fills (upstream's
value and the range a caller may choose) and how the background of a photo without a mask or alpha is removed.

For the preparation itself, the API's ``PrepareOptions`` and the CLI's ``--foreground-ratio`` and
``--background-removal``; msgspec alone here, so the API can name them without importing pillow or numpy.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

UPSTREAM_FOREGROUND_RATIO = 0.85
"""Upstream's ``resize_foreground(image, 0.85)``: the object's longer side over the square's side."""

ForegroundRatio = Annotated[float, Meta(gt=0.0, le=1.0)]
"""A foreground ratio: above 0, at most the whole square."""

BackgroundRemoval = Literal["auto", "rembg", "white", "none"]
"""Where the outline of a photo without a mask or an alpha channel comes from: ``auto`` takes a white backdrop
as the background (the near-white heuristic) and otherwise lets rembg find the object; ``rembg`` always uses
rembg; ``white`` only the heuristic; ``none`` takes the whole image as the object."""
