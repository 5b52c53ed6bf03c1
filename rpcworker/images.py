"""Decoding input images (paths or inline bytes) into PIL images, with errors that name what was wrong."""

from __future__ import annotations

import io
import os
import stat
from typing import TYPE_CHECKING

from .wire.errors import InputNotFound, InputUnreadable, InvalidParams
from .wire.messages import (
    INPUT_FILE_FORMATS,
    MAX_IMAGE_PIXELS,
    MAX_INPUT_BYTES,
    ImageInput,
    ImagePath,
    ViewsGridPath,
    ViewsGridPng,
)

if TYPE_CHECKING:
    from PIL import Image

MAX_PIXELS = MAX_IMAGE_PIXELS
MIN_SIDE = 8
ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P")
INLINE_FORMATS = ("PNG", "JPEG")
"""What inline image data may be: formats decoded in-process, never by an external program."""
FILE_FORMATS = INPUT_FILE_FORMATS


def _read_bytes(path: str, field: str) -> bytes:
    """The file's bytes. Only regular files are read, opened non-blocking, so a FIFO or a device named by
    mistake is refused instead of blocking the executor (or streaming forever); size is capped too."""
    if not os.path.isabs(path) or "\0" in path:
        raise InvalidParams(
            f"{field} must be an absolute path without NUL bytes, got {path!r}", {"field": field, "path": path}
        )
    if not os.path.exists(path):
        raise InputNotFound(f"input file not found: {path}", {"path": path})
    if os.path.isdir(path):
        raise InputUnreadable(
            f"input is a directory, not an image file: {path}", {"path": path, "reason": "is a directory"}
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputUnreadable(f"cannot open {path}: {exc.strerror}", {"path": path, "reason": exc.strerror}) from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputUnreadable(
                f"input is not a regular file: {path}", {"path": path, "reason": "not a regular file"}
            )
        if info.st_size > MAX_INPUT_BYTES:
            raise InputUnreadable(
                f"input file {path} is {info.st_size} bytes, over the limit of {MAX_INPUT_BYTES}",
                {"path": path, "reason": "file too large", "size": info.st_size, "limit": MAX_INPUT_BYTES},
            )
        try:
            data = f.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise InputUnreadable(
                f"cannot read {path}: {exc.strerror}", {"path": path, "reason": exc.strerror}
            ) from exc
    # The cap holds for files whose reported size is 0 (/proc, sysfs) too: what was read is what counts.
    if len(data) > MAX_INPUT_BYTES:
        raise InputUnreadable(
            f"input file {path} holds more than {MAX_INPUT_BYTES} bytes, over the limit",
            {"path": path, "reason": "file too large", "size": len(data), "limit": MAX_INPUT_BYTES},
        )
    return data


def _decode(data: bytes, where: str, formats: tuple[str, ...]) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=list(formats)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InputUnreadable(
                    f"{where}: image of {img.width}x{img.height} exceeds {MAX_PIXELS} pixels",
                    {"path": where, "reason": "too large", "width": img.width, "height": img.height},
                )
            img.load()
            image = img.copy()
    except InputUnreadable:
        raise
    except UnidentifiedImageError as exc:
        raise InputUnreadable(
            f"{where}: not a {', '.join(formats)} image",
            {"path": where, "reason": "unsupported format", "accepted": list(formats)},
        ) from exc
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise InputUnreadable(f"{where}: not a readable image ({exc})", {"path": where, "reason": str(exc)}) from exc
    if image.mode not in ACCEPTED_MODES:
        raise InputUnreadable(
            f"{where}: unsupported image mode {image.mode} (accepted: {', '.join(ACCEPTED_MODES)})",
            {"path": where, "reason": "unsupported mode", "mode": image.mode},
        )
    if min(image.size) < MIN_SIDE:
        raise InputUnreadable(
            f"{where}: image of {image.width}x{image.height} is smaller than {MIN_SIDE} px on a side",
            {"path": where, "reason": "too small", "width": image.width, "height": image.height},
        )
    return image


def load_input_image(source: ImageInput) -> Image.Image:
    """The condition image as RGBA (transparent background kept) or RGB."""
    if isinstance(source, ImagePath):
        image = _decode(_read_bytes(source.path, "image.path"), source.path, FILE_FORMATS)
    else:
        image = _decode(source.data, "inline image", INLINE_FORMATS)
    if image.mode in ("P", "LA", "L"):
        image = image.convert("RGBA" if image.mode in ("P", "LA") else "RGB")
    return image


def load_views_grid(source: ViewsGridPath | ViewsGridPng) -> Image.Image:
    """A 3-row x 2-column grid of square views, as RGB."""
    if isinstance(source, ViewsGridPath):
        where = source.path
        image = _decode(_read_bytes(source.path, "views.path"), where, FILE_FORMATS)
    else:
        where = "inline grid"
        image = _decode(source.data, where, INLINE_FORMATS)
    width, height = image.size
    if width % 2 or height * 2 != width * 3:
        raise InputUnreadable(
            f"{where}: a views grid is 3 rows x 2 columns of square views (height = 1.5 x width), got {width}x{height}",
            {"path": where, "reason": "not a 3x2 grid", "width": width, "height": height},
        )
    return image.convert("RGB")
