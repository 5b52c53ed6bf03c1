"""Object names that every output and temporary name built on them fits the file system, whatever the input's name.

An object is named after its file (``mug.png`` → ``mug``), and its files add to that name (``mug_views.png``). An
input whose name is as long as the file system allows must still work, so a name is cut, at a character, to leave
room for the longest suffix; a name that is not valid UTF-8 (which no JSON reply could carry) has its stray bytes
replaced. Names given by the caller are not cut: one that could not be a plain file name is refused, in one line.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable

from ..worker.owners import TAG_PATTERN, owner_tag

NAME_MAX_DEFAULT = 255
"""Bytes in one file name, where the file system does not say (Linux's and macOS's limit)."""
LONGEST_SUFFIX = "_views.png"
"""The longest ending any output adds to an object's name (``_input.png`` and ``_sheet.png`` are as long)."""
PARTIAL_TAG = ".partial-"
RANDOM_HEX = 6


def name_max(directory: str | os.PathLike[str]) -> int:
    """The file system's limit on one name, in bytes, in ``directory`` (or the nearest folder above that exists)."""
    folder = os.path.abspath(os.fspath(directory))
    while True:
        try:
            return int(os.pathconf(folder, "PC_NAME_MAX"))
        except (OSError, ValueError):
            parent = os.path.dirname(folder)
            if parent == folder:
                return NAME_MAX_DEFAULT
            folder = parent


def cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes (its file-system encoding), never inside a character."""
    encoded = os.fsencode(text)
    if len(encoded) <= limit:
        return text
    return encoded[: max(limit, 0)].decode("utf-8", "ignore")


def readable(stem: str) -> str:
    """A name in valid UTF-8: bytes of another encoding (a file name from an old system) become U+FFFD."""
    return os.fsencode(stem).decode("utf-8", "replace")


def object_name_budget(directory: str | os.PathLike[str]) -> int:
    """Bytes an object's name may have so that its every output's name fits in ``directory``."""
    return name_max(directory) - len(LONGEST_SUFFIX)


class UniqueNames:
    """Names for a run's objects: the stem made readable and cut to ``budget`` bytes, then ``stem-2``,
    ``stem-3``... (cut further to make room) for a name already taken; stable from run to run."""

    def __init__(self, budget: int, taken: Iterable[str] = ()) -> None:
        self.budget = budget
        self.used = set(taken)

    def numbered(self, stem: str, number: int) -> str:
        """``stem`` (number 1) or ``stem-NUMBER``, cut to fit the budget."""
        base = readable(stem)
        if number == 1:
            return cut(base, self.budget)
        suffix = f"-{number}"
        return cut(base, self.budget - len(suffix)) + suffix

    def take(self, stem: str) -> str:
        number = 1
        while (name := self.numbered(stem, number)) in self.used:
            number += 1
        self.used.add(name)
        return name


def plain_name_problem(name: object, budget: int) -> str | None:
    """Why ``name`` (given by the caller for an object) cannot name files inside one folder, or None."""
    if not isinstance(name, str) or not name:
        return "is not a non-empty string"
    if name in (os.curdir, os.pardir) or os.sep in name or (os.altsep and os.altsep in name) or "\0" in name:
        return "is not a plain file name (no folders, '.', '..' or NUL): outputs stay inside out_dir"
    if readable(name) != name:
        return "is not valid UTF-8"
    if len(os.fsencode(name)) > budget:
        return f"is {len(os.fsencode(name))} bytes long; with its outputs' endings it must fit in {budget} bytes"
    return None


def temporary_name(name: str, limit: int) -> str:
    """A hidden, unpredictable name beside ``name`` for a file written before it takes ``name``: ``.NAME.partial-
    OWNER-RAND.EXT`` (OWNER: this host's tag, `host.worker.owners`), NAME cut so the whole fits ``limit`` bytes."""
    stem, ext = os.path.splitext(name)
    tag = f"{PARTIAL_TAG}{owner_tag()}-{secrets.token_hex(RANDOM_HEX // 2)}{ext}"
    return f".{cut(stem, limit - 1 - len(os.fsencode(tag)))}{tag}"


TEMPORARY_NAME_PATTERN = rf"\..*{re.escape(PARTIAL_TAG)}(?P<owner>{TAG_PATTERN})-[0-9a-f]{{{RANDOM_HEX}}}(\.[^.]*)?"
"""Every name `temporary_name` makes (and no name the worker's own temporary files get: theirs hold a bare pid)."""
