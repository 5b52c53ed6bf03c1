"""The one error type of input preparation, apart from the modules that raise it (the cut, rembg), so each
of them raises it without importing the others."""

from __future__ import annotations


class PreprocessError(ValueError):
    """An input that cannot be prepared; the message names the file (or says it was an in-memory image)."""
