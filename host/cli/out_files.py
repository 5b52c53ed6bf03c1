"""The host's own files in ``--out`` (prepared inputs, the report): never written through a symlink planted there.

``--out`` itself is the person's choice and may be a symlink; what lies inside it may have been put there by anyone
who can write to it. So a folder inside it (``report/``) is opened with ``O_NOFOLLOW`` and every file is made new
(``O_CREAT | O_EXCL | O_NOFOLLOW``) under a hidden, unpredictable temporary name that fits the file system, then
renamed over its final name relative to the folder's descriptor: a symlink found at the final name is replaced,
never followed, and a folder that is a symlink is refused in one line. The temporary name carries the host's
owner tag (`host.worker.owners`): what a killed host left under one is removed by the next that uses the folder
(`remove_killed_hosts_files`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..api.naming import TEMPORARY_NAME_PATTERN, name_max, temporary_name
from ..worker.owners import remove_debris

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
SHARED_FILE_MODE = 0o644
"""The report's files, as a web server or a colleague would read them."""


class PlantedSymlink(OSError):
    """A folder inside ``--out`` that the host would write into is a symlink (or not a folder)."""


@contextlib.contextmanager
def out_folder(out_dir: Path, sub: str | None = None) -> Iterator[int]:
    """A descriptor of ``out_dir`` (followed: the person named it), or of its folder ``sub``, created if missing
    and never followed if it is a symlink."""
    fd = os.open(out_dir, FOLDER_FLAGS)
    try:
        if sub is not None:
            below = _open_below(fd, sub, out_dir)
            os.close(fd)
            fd = below
        yield fd
    finally:
        os.close(fd)


def _open_below(parent: int, name: str, out_dir: Path) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent)
    try:
        return os.open(name, FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        kind = "a symlink" if stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode) else "not a folder"
        raise PlantedSymlink(
            exc.errno, f"{out_dir / name} is {kind}; the host never writes through one (remove it)"
        ) from None


def write_new(folder: int, name: str, data: bytes, mode: int = SHARED_FILE_MODE) -> None:
    """``data`` in a file made new at ``name`` in ``folder``: refused (FileExistsError) if anything is there,
    a symlink included. A write that fails (a full disk) removes the file again."""
    fd = os.open(name, NEW_FILE_FLAGS, mode, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
            out.flush()
            os.fsync(fd)
        os.fchmod(fd, mode)  # the umask does not decide what the report's readers may see
    except BaseException:  # a full disk, Ctrl-C: the file made here goes, so nothing truncated stays
        discard(folder, name)
        raise
    finally:
        os.close(fd)


def stage(folder: int, name: str, data: bytes, limit: int) -> str:
    """``data`` under a hidden temporary name for ``name`` (``limit``: the file system's name limit); returns
    that name. It becomes ``name`` with `commit`, or goes with `discard`."""
    temporary = temporary_name(name, limit)
    write_new(folder, temporary, data, 0o600)
    return temporary


def commit(folder: int, temporary: str, name: str, mode: int) -> None:
    """Gives the staged file ``mode`` and renames it over ``name`` (a symlink there is replaced, not followed)."""
    fd = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)


def discard(folder: int, temporary: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary, dir_fd=folder)


def replace_file(out_dir: Path, name: str, data: bytes, sub: str | None = None) -> None:
    """``out_dir/[sub/]name`` holds ``data``, written whole before it takes the name (atomic, never through a
    symlink; mode 644)."""
    with out_folder(out_dir, sub) as folder:
        temporary = stage(folder, name, data, name_max(out_dir))
        try:
            commit(folder, temporary, name, SHARED_FILE_MODE)
        except BaseException:
            discard(folder, temporary)
            raise


def remove_killed_hosts_files(out_dir: Path, subs: tuple[str, ...] = ()) -> list[str]:
    """Removes the temporary files (staged inputs, the report's files) that hosts killed before they could rename
    or remove them left in ``out_dir`` and its folders ``subs`` (never through a symlink); returns their names.
    Only those of hosts that are surely gone: a host writing here meanwhile keeps its own."""
    removed = remove_debris(out_dir, TEMPORARY_NAME_PATTERN, "file")
    for sub in subs:
        removed += [
            f"{sub}/{name}" for name in remove_debris(out_dir / sub, TEMPORARY_NAME_PATTERN, "file", follow=False)
        ]
    return removed
