"""The tools' image argument (a file path, or base64 PNG/JPEG) as what the API takes, prepared in the host on request.

An agent may hold a photo as a file or only as data; both arrive as one string. A string naming a file is that
file; otherwise it must decode as base64 (a ``data:image/...;base64,`` URI too) to PNG or JPEG bytes. Anything else
is one line saying which of the two it is not.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Union

from .tool_arguments import ToolInputError

ToolImage = Union[Path, bytes]
"""An image as the API takes it: an absolute file path (the worker reads it) or encoded PNG/JPEG bytes."""

IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
"""PNG's and JPEG's first bytes: decoded data must start with one of them."""
DATA_URI = re.compile(r"^data:image/[a-z+.-]+;base64,", re.IGNORECASE)
LONGEST_PATH = 4096
"""PATH_MAX on Linux: a longer argument is not looked up as a file."""
SHOWN_CHARACTERS = 60
"""How much of a bad argument an error quotes."""
SMALLEST_IMAGE_BYTES = 67
"""No PNG or JPEG file is smaller: shorter base64 data was more likely meant as something else (a word, a name)."""


def tool_image(argument: str) -> ToolImage:
    """The file the argument names, else its base64 data decoded (PNG or JPEG); ToolInputError otherwise."""
    uri = DATA_URI.match(argument)
    if uri is None and len(argument) <= LONGEST_PATH:
        path = Path(argument).expanduser()
        try:
            if path.is_file():
                return path.resolve()
            if path.is_dir():
                raise ToolInputError(f"image: {argument} is a folder, not an image file")
        except OSError:
            pass  # not a name the filesystem accepts: maybe base64
    payload = "".join(argument[uri.end() if uri else 0 :].split())
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if data.startswith(IMAGE_SIGNATURES):
        return data
    shown = argument if len(argument) <= SHOWN_CHARACTERS else argument[:SHOWN_CHARACTERS] + "..."
    if uri is not None or len(data) >= SMALLEST_IMAGE_BYTES:
        raise ToolInputError(f"image: the base64 data is not a PNG or JPEG image (it starts {data[:8]!r})")
    if os.sep in argument or Path(argument).suffix:
        raise ToolInputError(f"image: no such file: {argument}")
    raise ToolInputError(f"image: {shown!r} is neither an existing file nor base64 PNG/JPEG data")


def api_image(image: ToolImage, prepare: bool) -> ToolImage:
    """What the API is given: the image as it is, or with ``prepare`` the host's preparation of it (crop, centre,
    scale; ``host.images.preparation``, as the API's ``prepare=`` does) as PNG bytes. The face prepares before the
    call, not through the API's ``prepare=``, so that calls arriving together are all prepared before the gate lets
    them into the worker as one batch; its worker is made with ``prepare=False``."""
    if not prepare:
        return image
    try:
        from ..images.preparation import PreprocessError, prepare_file
    except ImportError as exc:
        raise ToolInputError(
            f"prepare needs pillow and numpy in the host's Python ({sys.executable}): "
            f"pip install 'instantmesh-rpc[images]', or pass prepare=false ({exc})"
        ) from None
    with tempfile.TemporaryDirectory(prefix="instantmesh-mcp-input-") as folder:
        # Data goes through a file so that it meets the same checks (formats, size, pixels) as a path does.
        path = image if isinstance(image, Path) else Path(folder) / "image"
        if isinstance(image, bytes):
            path.write_bytes(image)
        try:
            prepared = prepare_file(path)
        except (PreprocessError, OSError) as exc:
            why = str(exc) if isinstance(image, Path) else str(exc).replace(str(path), "the base64 image")
            raise ToolInputError(f"image: {why}") from None
    encoded = io.BytesIO()
    prepared.image.save(encoded, format="PNG")
    return encoded.getvalue()
