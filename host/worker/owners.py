"""Names that say which host made a temporary file or folder, so that a later host removes what a killed one left.

A host that is killed (SIGKILL, the machine's out-of-memory killer) cannot clean up: a staged input stays hidden
in ``--out``, a pool's transfer folder stays in ``/dev/shm``. So each such name carries an owner tag,
``PID-START-PLACE``: the pid, the process's start time (clock ticks after boot, from ``/proc``; a pid used again
by a later process is another owner) and eight hex digits of the machine's boot and pid namespace (a pid names a
process only there). A later host removes, when it starts, the entries whose owner is gone (`remove_debris`):
only names of our own shapes, only entries of this user, of the kind we make (a file or a folder: a symlink is
never ours and never followed), and never one whose owner may still run: alive, or of another machine, boot or
pid namespace (an output folder shared with a container), which no pid here can vouch for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("host.owners")

TAG_PATTERN = r"\d+-\d+-[0-9a-f]{8}"
"""An owner tag in a name pattern: ``PID-START-PLACE``."""
PLACE_HEX = 8
BOOT_ID = "/proc/sys/kernel/random/boot_id"
PID_NAMESPACE = "/proc/self/ns/pid"
START_FIELD = 19
"""The start time's index among /proc/PID/stat's fields after the command name (field 22 of the whole line)."""
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
GONE_STATES = ("Z", "X")
"""A zombie (dead, not yet reaped) writes nothing more: its files are debris already."""


@dataclass(frozen=True)
class Owner:
    pid: int
    start: int
    place: str

    @property
    def tag(self) -> str:
        return f"{self.pid}-{self.start}-{self.place}"


_this: dict[int, Owner] = {}


def this_host() -> Owner:
    """This process as an owner (worked out again in a forked child, whose pid differs)."""
    pid = os.getpid()
    if pid not in _this:
        facts = _process_facts(pid)
        _this.clear()
        _this[pid] = Owner(pid, facts[1] if facts else 0, _place())
    return _this[pid]


def owner_tag() -> str:
    return this_host().tag


def parse_tag(tag: str) -> Owner | None:
    pid, _, rest = tag.partition("-")
    start, _, place = rest.partition("-")
    if not (pid.isdigit() and start.isdigit() and re.fullmatch(f"[0-9a-f]{{{PLACE_HEX}}}", place)):
        return None
    return Owner(int(pid), int(start), place)


def is_gone(owner: Owner) -> bool:
    """True only when ``owner`` surely runs no more: of this place, and its pid is free, a zombie or another
    process's (another start time)."""
    if owner.place != this_host().place:
        return False
    facts = _process_facts(owner.pid)
    if facts is not None:
        state, start = facts
        return state in GONE_STATES or (owner.start != 0 and start != owner.start)
    if os.path.isdir("/proc/self"):
        return True  # /proc shows every process of this pid namespace: none has this pid
    try:
        os.kill(owner.pid, 0)  # no /proc (macOS): whether the pid runs, not whose it is
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def remove_debris(folder: str | os.PathLike[str], pattern: str, kind: str, *, follow: bool = True) -> list[str]:
    """Removes the entries of ``folder`` whose whole name matches ``pattern`` (with a group ``owner``, the tag)
    and whose owner is gone; ``kind`` is ``file`` or ``folder``, what such names are made as. Entries of other
    users, of another kind or that go away meanwhile are left, and so is everything in ``folder`` when it is a
    symlink unless ``follow`` (a folder the person named). Returns the names removed."""
    regex = re.compile(pattern, re.DOTALL)
    try:
        fd = os.open(folder, FOLDER_FLAGS | (0 if follow else os.O_NOFOLLOW))
    except OSError:
        return []
    removed = []
    try:
        for name in os.listdir(fd):
            match = regex.fullmatch(name)
            owner = parse_tag(match.group("owner")) if match else None
            if owner is not None and is_gone(owner) and _remove(fd, folder, name, kind):
                log.info("removed %s, left by a host that was killed (pid %d)", os.path.join(folder, name), owner.pid)
                removed.append(name)
    except OSError as exc:
        log.debug("could not look through %s: %s", folder, exc)
    finally:
        os.close(fd)
    return removed


def folder_pattern(prefix: str) -> str:
    """The names `owned_folder` makes for ``prefix``."""
    return rf"{re.escape(prefix)}(?P<owner>{TAG_PATTERN})-\w+"


def owned_folder(prefix: str, parent: str | os.PathLike[str] | None = None) -> str:
    """A new private folder (``mkdtemp``) named ``PREFIX``, this host's tag and a random part, in ``parent`` (the
    system's temporary folder by default), once the folders of that prefix whose hosts were killed are removed."""
    parent = os.fspath(parent) if parent is not None else tempfile.gettempdir()
    remove_debris(parent, folder_pattern(prefix), "folder")
    return tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=parent)


def _remove(fd: int, folder: str | os.PathLike[str], name: str, kind: str) -> bool:
    try:
        info = os.lstat(name, dir_fd=fd)
        if info.st_uid != os.geteuid():
            return False
        if kind == "folder" and stat.S_ISDIR(info.st_mode):
            shutil.rmtree(os.path.join(folder, name))  # never follows a symlink inside, nor one swapped in for it
        elif kind == "file" and stat.S_ISREG(info.st_mode):
            os.unlink(name, dir_fd=fd)
        else:
            return False
    except OSError as exc:
        log.debug("left %s: %s", os.path.join(folder, name), exc)
        return False
    return True


def _process_facts(pid: int) -> tuple[str, int] | None:
    """The state and start time of process ``pid`` from /proc, or None where it has none (or there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rsplit(") ", 1)[-1].split()  # the command name, in parentheses, may hold anything
    try:
        return fields[0], int(fields[START_FIELD])
    except (IndexError, ValueError):
        return None


def _place() -> str:
    """This machine's boot and pid namespace, in eight hex digits (a hostname where there is no /proc)."""
    try:
        boot = Path(BOOT_ID).read_text().strip()
    except OSError:
        boot = socket.gethostname()
    try:
        namespace = str(os.stat(PID_NAMESPACE).st_ino)
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{boot}\0{namespace}".encode()).hexdigest()[:PLACE_HEX]
