"""Names as people see them: on a terminal with control characters escaped, and in the report as URLs.

A file name may hold any byte but ``/`` and NUL: an escape sequence (``ESC [ 2 J`` clears the screen), a
carriage return that hides what came before it, a right-to-left override, bytes of an old encoding. Every name,
path and error line the command line prints goes through `printable` first, so a name is shown, never obeyed.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from urllib.parse import quote

NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Characters that reorder the text around them on screen (the "Trojan Source" characters)."""
SURROGATE_ESCAPES = range(0xDC80, 0xDD00)
"""How Python holds a byte of a file name that is not UTF-8 (surrogateescape): shown as that byte, ``\\xNN``."""


def _escaped(char: str) -> str:
    code = ord(char)
    if char in NAMED_ESCAPES:
        return NAMED_ESCAPES[char]
    if code in SURROGATE_ESCAPES:
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(char) in ("Cc", "Cs") or char in BIDI_CONTROLS:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def printable(text: object) -> str:
    """``text`` on one line with every control character escaped (``\\x1b``, ``\\n``, ``\\t``), backslashes doubled
    only where an escape could be mistaken; plain text comes back as it was."""
    value = str(text)
    if value.isprintable() and "\\" not in value:
        return value
    if not any(_escaped(char) != char for char in value if char != "\\"):
        return value
    return "".join(_escaped(char) for char in value)


def printable_lines(text: object) -> str:
    """As `printable`, keeping line breaks (for a message of several lines, such as a worker's stderr)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def shown(path: str | os.PathLike[str]) -> str:
    """A path as people want to read it: relative to the working directory when it lies inside it, escaped."""
    absolute = Path(os.path.abspath(path))
    try:
        return printable(absolute.relative_to(Path.cwd()))
    except ValueError:
        return printable(absolute)


def url_path(relative: str) -> str:
    """A relative path as the report's pages link to it: every byte but letters, digits, ``/`` and ``-._~``
    percent-encoded, so ``#``, ``?``, ``:``, spaces, tabs and other encodings stay part of the name."""
    return quote(os.fsencode(relative), safe="/")
