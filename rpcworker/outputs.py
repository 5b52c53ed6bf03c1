"""Where results may be written, and writing them so that a crash never leaves a truncated file."""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass

from .output_dirs import inside, output_folder, path_in
from .wire.errors import InvalidParams, OutputRefused

log = logging.getLogger("rpcworker.outputs")

PARTIAL_TAG = ".partial-"
RANDOM_HEX = 6
PARTIAL_EXTRA_BYTES = 1 + len(PARTIAL_TAG) + 10 + 1 + RANDOM_HEX
"""What a temporary name adds to the target's: a leading dot, the tag, a pid (at most 10 digits), '-', random hex."""

TEMPORARY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
STALE_PARTIAL_S = 10.0
"""A temporary output untouched this long, of a process that no longer runs here, is debris of a crash."""


class OutputPolicy:
    """The rule in protocol.md: absolute paths, inside ``root`` when one is set, no silent replacement."""

    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.realpath(root) if root else None

    def check(self, path: str, field: str, overwrite: bool) -> str:
        """The resolved path to write, or an error naming the field and the rule broken."""
        if not os.path.isabs(path) or "\0" in path:
            raise InvalidParams(
                f"{field} must be an absolute path without NUL bytes, got {path!r}", {"field": field, "path": path}
            )
        resolved = os.path.realpath(path)
        if not _utf8_encodable(resolved):
            # The result echoes the path: one that is not valid UTF-8 could never travel back in JSON.
            raise OutputRefused(
                f"{field} {path} resolves to a name that is not valid UTF-8, which the reply could not carry",
                {"field": field, "path": path, "reason": "not valid UTF-8"},
            )
        try:
            target = os.stat(resolved)
        except FileNotFoundError:
            target = None
        except OSError as exc:
            reason = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise OutputRefused(
                f"{field} {path} cannot be used: {reason}", {"field": field, "path": path, "reason": reason}
            ) from exc
        if self.root is not None and not inside(resolved, self.root):
            raise OutputRefused(
                f"{field} {path} is outside the worker's output root {self.root}",
                {"field": field, "path": path, "reason": "outside output root", "output_root": self.root},
            )
        if target is not None and stat.S_ISDIR(target.st_mode):
            raise OutputRefused(
                f"{field} {path} is a directory", {"field": field, "path": path, "reason": "is a directory"}
            )
        if target is not None and not stat.S_ISREG(target.st_mode):
            raise OutputRefused(
                f"{field} {path} exists and is not a regular file (a FIFO, device or socket); it is never replaced",
                {"field": field, "path": path, "reason": "not a regular file"},
            )
        if target is not None and not overwrite:
            raise OutputRefused(
                f"{field} {path} exists; pass overwrite=true to replace it",
                {"field": field, "path": path, "reason": "exists"},
            )
        return resolved


@contextmanager
def atomic_output(
    path: str,
    overwrite: bool = True,
    before_commit: Callable[[str], None] | None = None,
    root: str | None = None,
) -> Iterator[str]:
    """Yields a temporary path beside ``path``; moves it to ``path`` only if the block succeeds.

    With ``overwrite=False`` the move is a hard link, which fails if ``path`` appeared after the policy
    check (another writer, a race): an existing file is never replaced without overwrite, not even then.
    ``root`` is the policy's output root, enforced again as the file is written (`output_dirs`).
    ``before_commit`` sees the finished temporary file just before the move (a test hook).
    """
    with atomic_outputs([path], overwrite, before_commit, root) as (tmp,):
        yield tmp


@dataclass
class _Target:
    """One output being written: its folder (opened from the root), its name there and its temporary name."""

    path: str
    folder: int
    name: str
    temporary: str


@contextmanager
def atomic_outputs(
    paths: Sequence[str],
    overwrite: bool = True,
    before_commit: Callable[[str], None] | None = None,
    root: str | None = None,
) -> Iterator[list[str]]:
    """`atomic_output` for files that belong together (a mesh and its companions): one temporary path per
    target, all moved into place only if the block succeeds.

    They are moved in order; put the main file last, so that its presence means the rest is in place.
    If a move fails (without overwrite: a target appeared meanwhile), the files this call already moved
    are removed again, so a refused set leaves nothing behind. With overwrite, a file already replaced
    keeps its new contents (its old ones are gone); only a failing rename gets there. Every file is made,
    moved and linked relative to its folder's descriptor, opened from ``root`` without following symlinks.
    """
    with ExitStack() as folders:
        targets: list[_Target] = []
        for path in paths:
            directory, name = os.path.split(path)
            folder = folders.enter_context(output_folder(directory, root))
            stem, ext = _partial_parts(directory, name)
            _remove_dead_partials(folder, stem, ext)
            temporary = f".{stem}{PARTIAL_TAG}{os.getpid()}-{secrets.token_hex(RANDOM_HEX // 2)}{ext}"
            targets.append(_Target(path, folder, name, temporary))
        try:
            yield _create_temporaries(targets)
            _commit(targets, overwrite, before_commit)
        finally:
            for target in targets:
                with suppress(FileNotFoundError):
                    os.unlink(target.temporary, dir_fd=target.folder)


def _create_temporaries(targets: list[_Target]) -> list[str]:
    """Each temporary file made new (never through a symlink planted under its name); the paths to write them by."""
    paths = []
    for target in targets:
        try:
            os.close(os.open(target.temporary, TEMPORARY_FLAGS, 0o666, dir_fd=target.folder))
        except OSError as exc:
            raise OutputRefused(
                f"cannot write {target.path}: {exc.strerror or exc}", {"path": target.path, "reason": str(exc)}
            ) from exc
        paths.append(path_in(target.folder, target.temporary, os.path.dirname(target.path)))
    return paths


def _commit(targets: list[_Target], overwrite: bool, before_commit: Callable[[str], None] | None) -> None:
    placed: list[tuple[_Target, os.stat_result]] = []
    path = targets[0].path if targets else ""
    try:
        for target in targets:
            fd = os.open(target.temporary, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=target.folder)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for target in targets:
            path = target.path
            if before_commit is not None:
                before_commit(path_in(target.folder, target.temporary, os.path.dirname(path)))
            if overwrite:
                _refuse_non_regular(target)
                os.replace(target.temporary, target.name, src_dir_fd=target.folder, dst_dir_fd=target.folder)
            else:
                _link_no_clobber(target)
            placed.append((target, os.stat(target.name, dir_fd=target.folder, follow_symlinks=False)))
    except FileExistsError as exc:
        _remove_placed(placed)
        raise OutputRefused(
            f"{path} appeared while the output was being written; pass overwrite=true to replace it",
            {"path": path, "reason": "exists"},
        ) from exc
    except OSError as exc:
        if not overwrite:
            _remove_placed(placed)
        raise OutputRefused(f"cannot write {path}: {exc.strerror or exc}", {"path": path, "reason": str(exc)}) from exc


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _partial_parts(directory: str, name: str) -> tuple[str, str]:
    """The stem and extension a temporary name for ``name`` uses, cut so that the whole temporary name
    fits the file system's name limit (a target near the limit must still be writable)."""
    try:
        name_max = os.pathconf(directory or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    stem, ext = os.path.splitext(name)
    if len(os.fsencode(ext)) > 16:  # a long "extension" is part of the name, not a format
        stem, ext = name, ""
    budget = name_max - PARTIAL_EXTRA_BYTES - len(os.fsencode(ext))
    encoded = os.fsencode(stem)
    if len(encoded) > budget:
        stem = encoded[:budget].decode("utf-8", "ignore")  # check() refused names that are not UTF-8
    return stem, ext


def _refuse_non_regular(target: _Target) -> None:
    """Checked again just before replacing: overwrite never replaces a FIFO, device, socket or directory."""
    try:
        info = os.stat(target.name, dir_fd=target.folder)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise OutputRefused(
            f"{target.path} is not a regular file (it appeared while the output was being written); it is never replaced",
            {"path": target.path, "reason": "not a regular file"},
        )


def _remove_dead_partials(folder: int, stem: str, ext: str) -> None:
    """Removes the temporary files that killed writers left for this target (their pid is in the name)."""
    pattern = re.compile(rf"\.{re.escape(stem)}{re.escape(PARTIAL_TAG)}(\d+)-[0-9a-f]+{re.escape(ext)}")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _running(int(match.group(1))):
            continue
        try:
            if time.time() - os.lstat(name, dir_fd=folder).st_mtime > STALE_PARTIAL_S:
                os.unlink(name, dir_fd=folder)
                log.info("removed %s, left by a writer that was killed", name)
        except OSError:
            pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_placed(placed: list[tuple[_Target, os.stat_result]]) -> None:
    """Takes back the files a failed `atomic_outputs` had moved into place, if they are still ours."""
    for target, ours in placed:
        try:
            now = os.stat(target.name, dir_fd=target.folder, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
            try:
                os.unlink(target.name, dir_fd=target.folder)
            except OSError as exc:
                log.warning("could not remove %s after a failed write: %s", target.path, exc)


def _link_no_clobber(target: _Target) -> None:
    """Puts the temporary file at the target's name unless something is there (FileExistsError); the
    temporary file is removed by the caller."""
    folder = target.folder
    try:
        os.link(target.temporary, target.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # No hard links on this filesystem: the best left is check-then-rename.
        try:
            os.lstat(target.name, dir_fd=folder)
        except FileNotFoundError:
            os.replace(target.temporary, target.name, src_dir_fd=folder, dst_dir_fd=folder)
            return
        raise FileExistsError(errno.EEXIST, "exists", target.path) from exc
