"""What kind of file an input is, from its first bytes: found by the host before any worker starts, without the
``images`` extra. The formats are the wire's ``INPUT_FILE_FORMATS``; their signatures are the formats' own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rpcworker.wire.messages import INPUT_FILE_FORMATS

SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "GIF": (b"GIF87a", b"GIF89a"),
}
"""Leading bytes of each input format (WEBP is RIFF....WEBP, checked apart)."""
HEADER_BYTES = 12


def input_file_problem(path: Path) -> str | None:
    """One line saying why ``path`` cannot be an input image (not a regular file, unreadable, not an image of
    the accepted formats), or None. Reads at most HEADER_BYTES: a FIFO or a device is never opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{path}: {exc.strerror.lower() if exc.strerror else 'cannot be read'}"
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        return f"{path}: not a regular file ({kind})"
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    if image_format(head) is None:
        return f"{path}: not an image (its first bytes are none of {', '.join(INPUT_FILE_FORMATS)})"
    return None


def image_format(head: bytes) -> str | None:
    """The format whose signature ``head`` starts with, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for name, marks in SIGNATURES.items() if head.startswith(marks)), None)
