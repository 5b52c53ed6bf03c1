"""The cache folder host and worker share, and the one way anything in it is written and trusted.

The host stages the worker's code there; the worker keeps the tiny preset's weights, safetensors copies, bytecode,
compiled kernels, AOTInductor packages and the views bundle there. What is found there is run or loaded as it is,
so nothing in it is trusted for merely being there (issue 32):

- Private (`private_folder`): each folder of the cache, from its root down, is made 0700 and, at every use, must
  belong to this user (or to root, who can replace whatever the user runs anyway) and be writable by no one else;
  otherwise it is refused with one line naming the folder and the reason (`CacheNotPrivate`), never used.
- Written atomically (`atomic_file`): a temporary file beside the target, flushed to disk and renamed over it, so a
  reader finds the old file or the whole new one, and a writer that fails leaves nothing behind.
- Recorded (`CacheRecord`, one format for every cache): what the files were made from and by (``versions``), and
  for each file its size, the SHA-256 of the whole file (read once, right after it was written) and its stamp
  (mtime, ctime, inode); plus what the cache itself keeps about them (``notes``).
- Verified (`check_record`): the versions must equal the reader's and each file's size its record's; then the
  file is trusted when its stamp is unchanged, else only when the whole file still hashes to the recorded SHA-256
  (the record is then re-stamped: a copied or restored cache costs one read). Any write to a file moves its ctime,
  which no user can set back, so a file changed anywhere after its record was written is never used, and a
  large file (gigabytes of weights) is read once when written, not at every start. As in git's index, a stamp
  taken in the clock tick the record was written in proves nothing (a change in that tick would leave the ctime
  as it was): such files are hashed at every check (small files written quickly, as in the tests).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

ENV_CACHE = "INSTANTMESH_RPC_CACHE"
CACHE_FOLDER = "instantmesh-rpc"
PRIVATE_MODE = 0o700
"""Mode of each folder the cache makes: its user's alone."""
OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
RECORD_FORMAT = 1
RECORD_SUFFIX = ".record.json"
"""A single file's record is named after it: ``<file><RECORD_SUFFIX>`` (`record_path`)."""
PARTIAL_MARK = ".partial"
"""In the names of `atomic_file`'s temporary files: ``.<stem>.<random>.partial<suffix>`` (the suffix kept: some
writers insist on it)."""
HASH_BLOCK = 1 << 20


def cache_root() -> Path:
    """``INSTANTMESH_RPC_CACHE`` if set, else ``instantmesh-rpc`` in the XDG cache folder (``~/.cache``). Not made
    or checked here: `private_folder` does both."""
    configured = os.environ.get(ENV_CACHE)
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / CACHE_FOLDER


class CacheNotPrivate(ValueError):
    """A cache folder someone else could write to: refused, never used. The message is one line naming the folder,
    the reason and what to do."""


class CacheMiss(LookupError):
    """No usable cache entry (none, stale, changed or damaged): the entry is built again. The message says why."""


def _is_ours(info: os.stat_result) -> bool:
    return info.st_uid in (os.geteuid(), 0)


def check_private(folder: Path) -> None:
    """Raises `CacheNotPrivate` unless `folder` is a folder of this user (or root) that no one else can write."""
    info = os.stat(folder)
    remedy = f"set {ENV_CACHE} to a folder of your own that no one else can write"
    if not stat.S_ISDIR(info.st_mode):
        raise CacheNotPrivate(f"cache folder {folder} is not a folder; {remedy}")
    if not _is_ours(info):
        raise CacheNotPrivate(
            f"cache folder {folder} belongs to user id {info.st_uid}, not to this user ({os.geteuid()}): "
            f"what it holds could be anyone's; {remedy}"
        )
    if info.st_mode & OTHERS_WRITE:
        raise CacheNotPrivate(
            f"cache folder {folder} is writable by its group or others (mode {stat.S_IMODE(info.st_mode):o}): "
            f"what it holds could be anyone's; `chmod go-w {folder}` if all of it is yours, or {remedy}"
        )


def private_folder(folder: Path, make: bool = True) -> Path:
    """`folder`, made 0700 where missing (unless not `make`: then a missing one raises FileNotFoundError) and
    checked (`check_private`), with every folder between the cache root and it when it lies inside the cache root
    (others could swap any of them); returns `folder`."""
    root = cache_root()
    try:
        below = folder.relative_to(root).parts
        chain = [root] + [root.joinpath(*below[: i + 1]) for i in range(len(below))]
    except ValueError:
        chain = [folder]
    if make:
        chain[0].parent.mkdir(parents=True, exist_ok=True)
    for each in chain:
        if make:
            try:
                os.mkdir(each, PRIVATE_MODE)
                os.chmod(each, PRIVATE_MODE)  # whatever the umask took away
            except FileExistsError:
                pass
        check_private(each)
    return folder


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (in its private folder) for the caller to write, by name, any way it likes;
    when the block ends without an error the file is flushed to disk and renamed to `path`, otherwise removed.
    It starts as an empty file of mode 0600, which writers that open it again keep."""
    private_folder(path.parent)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{PARTIAL_MARK}{path.suffix}", dir=path.parent)
    os.close(descriptor)
    partial = Path(name)
    try:
        yield partial
        _fsync(partial)
        os.replace(partial, path)
        with suppress(OSError):  # the rename itself, where the file system lets a folder be flushed
            _fsync(path.parent)
    finally:
        if os.path.lexists(partial):
            partial.unlink()


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_file(path) as partial:
        partial.write_bytes(data)


def file_sha256(path: Path) -> str:
    """The SHA-256 of the whole file."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while True:
            count = f.readinto(buffer)
            if not count:
                return digest.hexdigest()
            digest.update(view[:count])


class FileFacts(msgspec.Struct, frozen=True):
    """One file as its record vouches for it: size, SHA-256 of all of it, and its stamp when that was taken."""

    size: int
    sha256: str
    mtime_ns: int
    ctime_ns: int
    inode: int

    def same_stamp(self, info: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode) == _stamp(info)


NotesT = TypeVar("NotesT")


class CacheRecord(msgspec.Struct, Generic[NotesT], frozen=True, kw_only=True):
    """The one record format of every cache: files (named relative to the record's folder) vouched for, what they
    were made from and by, and the cache's own notes about them (its own Struct, or None)."""

    format: int = RECORD_FORMAT
    versions: dict[str, str]
    """Library versions, keys, source files' facts: a reader whose own differ in any way does not use the files."""
    files: dict[str, FileFacts]
    notes: NotesT


RecordT = TypeVar("RecordT", bound="CacheRecord[Any]")


def record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def describe_files(folder: Path, names: Iterable[str]) -> dict[str, FileFacts]:
    """The facts of files just written under `folder`, for their record: each is hashed whole, and it and the
    folders between `folder` and it are made writable by their owner alone (whatever the umask let writers do)."""
    facts = {}
    for name in sorted(names):
        path = folder / name
        for each in [*_folders_between(folder, path), path]:
            mode = stat.S_IMODE(os.stat(each).st_mode)
            if mode & OTHERS_WRITE:
                os.chmod(each, mode & ~OTHERS_WRITE)
        before = os.stat(path)
        digest = file_sha256(path)
        info = os.stat(path)
        if not _same_file(before, info):
            raise OSError(f"{path} changed while it was hashed for its record")
        facts[name] = FileFacts(info.st_size, digest, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    return facts


def write_record(path: Path, record: CacheRecord[NotesT]) -> None:
    """Writes `record` at `path` atomically; written after the files it vouches for."""
    write_atomically(path, msgspec.json.encode(record))


def read_record(path: Path, kind: type[RecordT]) -> RecordT:
    """The record at `path`; `CacheMiss` when there is none or it is unreadable, not ours or writable by others, or
    of another format, and `CacheNotPrivate` when its folder (or one above it in the cache) is not private."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CacheMiss(f"no record {path}") from None
    except OSError as exc:
        raise CacheMiss(f"record {path} is unreadable: {exc}") from None
    private_folder(path.parent, make=False)
    if not _is_ours(info) or info.st_mode & OTHERS_WRITE:
        raise CacheMiss(f"record {path} could have been written by someone else")
    try:
        record: RecordT = msgspec.json.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError) as exc:  # msgspec.ValidationError is a DecodeError
        raise CacheMiss(f"record {path} is unreadable: {exc}") from None
    if record.format != RECORD_FORMAT:
        raise CacheMiss(f"record {path} is of format {record.format}, not {RECORD_FORMAT}")
    return record


def version_difference(record: CacheRecord[NotesT], versions: Mapping[str, str]) -> str | None:
    """How the record's versions differ from `versions` (one of the differences, in words), or None."""
    for key in sorted(set(record.versions) | set(versions)):
        made, here = record.versions.get(key), versions.get(key)
        if made != here:
            return f"made with {key} {made!r}, here {here!r}"
    return None


def check_files(path: Path, record: RecordT) -> RecordT:
    """`record` (read from `path`) when every file it vouches for is as recorded (the module's docstring says
    how); `CacheMiss` when one is not. A file that had to be hashed is re-stamped in the record (when it can be
    written), so that the next check need not hash it."""
    folder = path.parent
    restamped: dict[str, FileFacts] = {}
    record_written = os.stat(path).st_mtime_ns
    for name, facts in record.files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CacheMiss(f"record {path} names a file outside its folder: {name}")
        file = folder / name
        try:
            for each in _folders_between(folder, file):
                check_private(each)
            info = os.stat(file)
        except (OSError, CacheNotPrivate) as exc:
            raise CacheMiss(f"{file}: {exc}") from None
        if not _is_ours(info) or info.st_mode & OTHERS_WRITE:
            raise CacheMiss(f"{file} could have been written by someone else")
        if info.st_size != facts.size:
            raise CacheMiss(f"{file} has {info.st_size} bytes, its record says {facts.size}")
        if facts.same_stamp(info) and record_written > facts.ctime_ns:
            continue  # unchanged since it was hashed
        if file_sha256(file) != facts.sha256:
            raise CacheMiss(f"{file} changed after its record was written (its SHA-256 differs)")
        restamped[name] = FileFacts(facts.size, facts.sha256, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    if restamped:
        record = msgspec.structs.replace(record, files={**record.files, **restamped})
        with suppress(OSError):  # a cache this user may read but not write: hashed again next time
            write_record(path, record)
    return record


def check_record(path: Path, kind: type[RecordT], versions: Mapping[str, str]) -> RecordT:
    """The record at `path` when it was made with these `versions` and its files are as recorded; else `CacheMiss`
    (`CacheNotPrivate` when its folder is not private)."""
    record = read_record(path, kind)
    difference = version_difference(record, versions)
    if difference is not None:
        raise CacheMiss(f"record {path} is stale: {difference}")
    return check_files(path, record)


def _folders_between(folder: Path, file: Path) -> list[Path]:
    """The folders below `folder` that hold `file` (none when it lies in `folder` itself)."""
    parts = file.relative_to(folder).parts[:-1]
    return [folder.joinpath(*parts[: i + 1]) for i in range(len(parts))]


def _stamp(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


def _same_file(before: os.stat_result, after: os.stat_result) -> bool:
    return _stamp(before) == _stamp(after)
