"""An output's folder, opened from the output root without following symlinks, so a file lands where it was checked.

`OutputPolicy.check` resolves a path and checks it against ``--output-root`` before the model work; the file is
written seconds later. A folder swapped for a symlink in between must not carry the file elsewhere, so the
writer never uses the folder's path: it opens the root, then each folder below it with ``O_NOFOLLOW``, and
creates, renames and links the files relative to that descriptor (``dir_fd=``). A folder that has become a
symlink is resolved again and checked against the root once more: outside it is ``output_refused``. Linux is
the target (``/proc/self/fd`` names a file inside the opened folder for the code that writes it by path).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .wire.errors import OutputRefused

MAX_RESOLVES = 8
"""How many times a folder that keeps turning into a symlink is resolved again before the write is refused."""
WALK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
"""Folders on the way are only passed through (``O_PATH``: no read permission needed, as for a path)."""
FOLDER_FLAGS = WALK_FLAGS | os.O_NOFOLLOW
NEW_FOLDER_MODE = 0o777
"""As ``os.makedirs`` creates them: the umask decides."""


class _SymlinkOnTheWay(Exception):
    """A folder on the way to the output is (now) a symlink."""


def inside(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


@contextmanager
def output_folder(directory: str, root: str | None) -> Iterator[int]:
    """A descriptor of ``directory`` (an output's resolved folder), opened folder by folder from ``root`` (or
    ``/``) without following a symlink, missing folders created; closed when the block ends."""
    resolved = directory
    for _ in range(MAX_RESOLVES):
        if root is not None and not inside(resolved, root):
            raise OutputRefused(
                f"{directory} leads outside the worker's output root {root} (a folder on the way became a symlink "
                "after the output was checked); nothing was written",
                {"path": directory, "reason": "outside output root", "output_root": root},
            )
        try:
            fd = _walk(resolved, root or os.sep)
        except _SymlinkOnTheWay:
            resolved = os.path.realpath(directory)
            continue
        try:
            yield fd
        finally:
            os.close(fd)
        return
    raise OutputRefused(
        f"{directory} kept changing into symlinks while the output was being written; nothing was written",
        {"path": directory, "reason": "a symlink loop"},
    )


def _walk(directory: str, base: str) -> int:
    try:
        fd = os.open(base, WALK_FLAGS)  # the root itself: the operator's choice, followed
    except OSError as exc:
        raise _cannot_create(directory, exc) from exc
    try:
        relative = os.path.relpath(directory, base)
        for part in [] if relative == os.curdir else relative.split(os.sep):
            below = _open_or_make(fd, part, directory)
            os.close(fd)
            fd = below
        return _readable(fd)
    except BaseException:
        os.close(fd)
        raise


def _readable(fd: int) -> int:
    """The output's folder opened for reading too (to list a killed writer's leftovers), where permissions allow."""
    try:
        readable = os.open(os.curdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    except PermissionError:
        return fd
    os.close(fd)
    return readable


def _open_or_make(parent: int, name: str, directory: str) -> int:
    for _ in range(2):  # a folder made (or removed) by someone else between our two calls gets one more try
        try:
            return os.open(name, FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            try:
                os.mkdir(name, NEW_FOLDER_MODE, dir_fd=parent)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _cannot_create(directory, exc) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_symlink(parent, name):
                raise _SymlinkOnTheWay from exc
            raise _cannot_create(directory, exc) from exc
    return os.open(name, FOLDER_FLAGS, dir_fd=parent)


def _is_symlink(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
    except OSError:
        return False


def _cannot_create(directory: str, exc: OSError) -> OutputRefused:
    reason = exc.strerror or str(exc)
    return OutputRefused(f"cannot create directory {directory}: {reason}", {"path": directory, "reason": reason})


def path_in(folder: int, name: str, directory: str) -> str:
    """A path naming ``name`` inside the opened folder, for code that writes by path (PIL, the mesh exporters):
    through ``/proc/self/fd`` it reaches the folder by its descriptor, never by the folder's own path (which
    ``directory`` is, used only where there is no /proc)."""
    through = f"/proc/self/fd/{folder}"
    return os.path.join(through if os.path.isdir(through) else directory, name)
