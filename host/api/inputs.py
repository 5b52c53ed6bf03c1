"""How images and paths travel to the worker: paths as absolute paths, everything else as inline PNG."""

from __future__ import annotations

import io
import os
from typing import Any, Union

from rpcworker.wire.messages import ImageInput, ImagePath, ImagePng

ImageLike = Union[str, "os.PathLike[str]", bytes, Any]
"""A file path, encoded PNG/JPEG bytes, a PIL image or an HxWx{3,4} uint8 numpy array."""


def image_input(image: ImageLike) -> ImageInput:
    """Paths travel as absolute paths (the worker reads the file); everything else as inline PNG bytes."""
    if isinstance(image, (str, os.PathLike)):
        return ImagePath(os.path.abspath(os.fspath(image)))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return ImagePng(bytes(image))
    return ImagePng(png_bytes(image))


PNG_COMPRESS_LEVEL = 1
"""Fast compression: the bytes cross a pipe once and are decoded at once."""


def png_bytes(image: Any) -> bytes:
    """A PIL image or an HxWx{3,4} uint8 array as PNG: the one encoding of what the host sends inline."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def absolute_path(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(os.fspath(path)))
