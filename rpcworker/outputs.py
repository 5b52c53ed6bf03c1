"""Where results may be written, and writing them so that a crash never leaves a truncated file."""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from .errors import InvalidParams, OutputRefused

log = logging.getLogger("rpcworker.outputs")

STALE_PARTIAL_S = 10.0
"""A temporary output untouched this long, of a process that no longer runs here, is debris of a crash."""


class OutputPolicy:
    """The rule in protocol.md: absolute paths, inside ``root`` when one is set, no silent replacement."""

    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.realpath(root) if root else None

    def check(self, path: str, field: str, overwrite: bool) -> str:
        """The resolved path to write, or an error naming the field and the rule broken."""
        if not os.path.isabs(path) or "\0" in path:
            raise InvalidParams(f"{field} must be an absolute path without NUL bytes, got {path!r}", {"field": field, "path": path})
        resolved = os.path.realpath(path)
        if self.root is not None and os.path.commonpath([self.root, resolved]) != self.root:
            raise OutputRefused(
                f"{field} {path} is outside the worker's output root {self.root}",
                {"field": field, "path": path, "reason": "outside output root", "output_root": self.root},
            )
        if os.path.isdir(resolved):
            raise OutputRefused(f"{field} {path} is a directory", {"field": field, "path": path, "reason": "is a directory"})
        if os.path.exists(resolved) and not overwrite:
            raise OutputRefused(
                f"{field} {path} exists; pass overwrite=true to replace it",
                {"field": field, "path": path, "reason": "exists"},
            )
        return resolved


@contextmanager
def atomic_output(path: str, overwrite: bool = True, before_commit: Callable[[str], None] | None = None) -> Iterator[str]:
    """Yields a temporary path beside ``path``; moves it to ``path`` only if the block succeeds.

    With ``overwrite=False`` the move is a hard link, which fails if ``path`` appeared after the policy
    check (another writer, a race): an existing file is never replaced without overwrite, not even then.
    ``before_commit`` sees the finished temporary file just before the move (a test hook).
    """
    with atomic_outputs([path], overwrite, before_commit) as (tmp,):
        yield tmp


@contextmanager
def atomic_outputs(
    paths: Sequence[str], overwrite: bool = True, before_commit: Callable[[str], None] | None = None
) -> Iterator[list[str]]:
    """`atomic_output` for files that belong together (a mesh and its companions): one temporary path per
    target, all moved into place only if the block succeeds.

    They are moved in order; put the main file last, so that its presence means the rest is in place.
    If a move fails (without overwrite: a target appeared meanwhile), the files this call already moved
    are removed again, so a refused set leaves nothing behind. With overwrite, a file already replaced
    keeps its new contents (its old ones are gone); only a failing rename gets there.
    """
    tmps: list[str] = []
    for path in paths:
        directory, name = os.path.split(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise OutputRefused(f"cannot create directory {directory}: {exc.strerror}", {"path": path, "reason": exc.strerror}) from exc
        stem, ext = os.path.splitext(name)
        _remove_dead_partials(directory, stem, ext)
        tmps.append(os.path.join(directory, f".{stem}.partial-{os.getpid()}-{secrets.token_hex(3)}{ext}"))
    placed: list[tuple[str, os.stat_result]] = []
    path = paths[0] if paths else ""
    try:
        yield tmps
        for tmp in tmps:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        for path, tmp in zip(paths, tmps, strict=False):
            if before_commit is not None:
                before_commit(tmp)
            if overwrite:
                os.replace(tmp, path)
            else:
                _link_no_clobber(tmp, path)
            placed.append((path, os.stat(path)))
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
    finally:
        for tmp in tmps:
            if os.path.lexists(tmp):
                os.unlink(tmp)


def _remove_dead_partials(directory: str, stem: str, ext: str) -> None:
    """Removes the temporary files that killed writers left for this target (their pid is in the name)."""
    pattern = re.compile(rf"\.{re.escape(stem)}\.partial-(\d+)-[0-9a-f]+{re.escape(ext)}")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _running(int(match.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            if time.time() - os.lstat(path).st_mtime > STALE_PARTIAL_S:
                os.unlink(path)
                log.info("removed %s, left by a writer that was killed", path)
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


def _remove_placed(placed: list[tuple[str, os.stat_result]]) -> None:
    """Takes back the files a failed `atomic_outputs` had moved into place, if they are still ours."""
    for path, ours in placed:
        try:
            now = os.stat(path)
        except FileNotFoundError:
            continue
        if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
            try:
                os.unlink(path)
            except OSError as exc:
                log.warning("could not remove %s after a failed write: %s", path, exc)


def _link_no_clobber(tmp: str, path: str) -> None:
    """Puts ``tmp`` at ``path`` unless something is there (FileExistsError); ``tmp`` is removed by the caller."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # No hard links on this filesystem: the best left is check-then-rename.
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", path) from exc
        os.replace(tmp, path)
