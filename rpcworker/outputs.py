"""Where results may be written, and writing them so that a crash never leaves a truncated file."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from typing import Iterator

from .errors import InvalidParams, OutputRefused


class OutputPolicy:
    """The rule in protocol.md: absolute paths, inside ``root`` when one is set, no silent replacement."""

    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.realpath(root) if root else None

    def check(self, path: str, field: str, overwrite: bool) -> str:
        """The resolved path to write, or an error naming the field and the rule broken."""
        if not os.path.isabs(path):
            raise InvalidParams(f"{field} must be an absolute path, got {path!r}", {"field": field, "path": path})
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
def atomic_output(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path``; renames it over ``path`` only if the block succeeds."""
    directory, name = os.path.split(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OutputRefused(f"cannot create directory {directory}: {exc.strerror}", {"path": path, "reason": exc.strerror}) from exc
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(directory, f".{stem}.partial-{os.getpid()}-{secrets.token_hex(3)}{ext}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputRefused(f"cannot write {path}: {exc.strerror or exc}", {"path": path, "reason": str(exc)}) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
