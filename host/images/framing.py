"""How much of the prepared square the object fills: upstream's value and the range a caller may choose.

Declared once, for the preparation itself, the API's ``PrepareOptions`` and the CLI's ``--foreground-ratio``;
msgspec alone here, so the API can name the range without importing pillow or numpy.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

UPSTREAM_FOREGROUND_RATIO = 0.85
"""Upstream's ``resize_foreground(image, 0.85)``: the object's longer side over the square's side."""

ForegroundRatio = Annotated[float, Meta(gt=0.0, le=1.0)]
"""A foreground ratio: above 0, at most the whole square."""
