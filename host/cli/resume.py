"""The batch's resume rule: an object whose mesh exists is done and skipped; what stands at the mesh's name but
is not a mesh the batch can read is that object's failure, in one line, and the other objects go on.

A folder (or a FIFO, socket or device) at the mesh's name is never replaced, ``--overwrite`` or not (the worker
refuses it too); a file that exists but cannot be read is not a mesh to skip to, and ``--overwrite`` redoes it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
"""Opened to see that it reads; non-blocking, so a FIFO swapped in after the check never blocks the batch."""


def mesh_problem(mesh: Path, overwrite: bool) -> str | None:
    """Why the object of ``mesh`` fails before any work (None: no mesh yet, or one to skip or to redo)."""
    try:
        found = os.stat(mesh)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{mesh}: cannot be checked ({exc.strerror or exc})"
    if stat.S_ISDIR(found.st_mode):
        return f"{mesh} is a directory, where the mesh should be written"
    if not stat.S_ISREG(found.st_mode):
        return f"{mesh} exists and is not a regular file (a FIFO, device or socket), where the mesh should be written"
    if overwrite:
        return None
    try:
        fd = os.open(mesh, READ_FLAGS)
    except OSError as exc:
        return f"{mesh} exists but cannot be read ({exc.strerror or exc}); --overwrite redoes the object"
    with contextlib.closing(os.fdopen(fd, "rb")) as opened:
        try:
            opened.read(1)
        except OSError as exc:
            return f"{mesh} exists but cannot be read ({exc.strerror or exc}); --overwrite redoes the object"
    return None
