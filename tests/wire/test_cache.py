"""The cache's one module: a private root (refused with one line otherwise), the atomic writer, the one record
format, and a check that trusts a file only as its record describes it."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import msgspec
import pytest

from rpcworker.wire import cache
from rpcworker.wire.cache import (
    PARTIAL_MARK,
    CacheMiss,
    CacheNotPrivate,
    CacheRecord,
    atomic_file,
    check_record,
    describe_files,
    private_folder,
    record_path,
    write_record,
)

Record = CacheRecord[None]
VERSIONS = {"maker": "1.0", "key": "abc"}


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache root, not made yet, in a folder of its own."""
    path = tmp_path / "home" / "cache"
    monkeypatch.setenv(cache.ENV_CACHE, str(path))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def recorded_file(folder: Path, data: bytes, name: str = "weights.bin") -> Path:
    """A file written through the atomic writer, and its record beside it."""
    path = folder / name
    with atomic_file(path) as partial:
        partial.write_bytes(data)
    write_record(record_path(path), Record(versions=VERSIONS, files=describe_files(folder, [name]), notes=None))
    return path


def flip(path: Path, offset: int) -> None:
    """One byte changed in place, the file's modification time set back to what it was."""
    before = path.stat()
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def settle(record: Path, file: Path) -> None:
    """As a record read at a later start: written after the clock moved past the file's last change (a record
    written in the same clock tick makes the check hash the file, as a change in that tick could not be seen)."""
    later = file.stat().st_ctime_ns + 10**9
    os.utime(record, ns=(later, later))


def test_the_root_and_its_folders_are_made_private(root: Path) -> None:
    folder = private_folder(root / "safetensors" / "inner")
    assert folder.is_dir() and [mode(p) for p in (root, root / "safetensors", folder)] == [0o700] * 3


def test_a_root_writable_by_its_group_is_refused_with_one_line(root: Path) -> None:
    private_folder(root)
    root.chmod(0o770)
    with pytest.raises(CacheNotPrivate) as refused:
        private_folder(root / "pycache")
    message = str(refused.value)
    assert "\n" not in message and str(root) in message and "writable by its group or others (mode 770)" in message
    assert not (root / "pycache").exists()  # refused before anything was made in it
    root.chmod(0o707)
    with pytest.raises(CacheNotPrivate, match="writable by its group or others"):
        private_folder(root)


def test_a_folder_inside_the_root_is_checked_too(root: Path) -> None:
    private_folder(root / "packages")
    (root / "packages").chmod(0o777)
    with pytest.raises(CacheNotPrivate, match=f"cache folder {root / 'packages'} is writable"):
        private_folder(root / "packages" / "step")


def test_a_root_owned_by_someone_else_is_refused_with_one_line(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private_folder(root)
    if os.geteuid() == 0:
        os.chown(root, 65534, 65534)  # nobody's
        owner = 65534
    else:  # only root can give a folder away: this user becomes someone else instead
        owner = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(CacheNotPrivate) as refused:
        private_folder(root)
    message = str(refused.value)
    assert "\n" not in message and f"cache folder {root} belongs to user id {owner}, not to this user" in message


def test_the_atomic_writer_replaces_whole_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "data.safetensors"
    with atomic_file(target) as partial:
        assert partial.parent == tmp_path and PARTIAL_MARK in partial.name and partial.suffix == ".safetensors"
        partial.write_bytes(b"first")
    assert target.read_bytes() == b"first" and mode(target) == 0o600
    with pytest.raises(RuntimeError, match="writer died"), atomic_file(target) as partial:
        partial.write_bytes(b"half of the sec")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["data.safetensors"]


def test_a_recorded_file_is_trusted_until_its_versions_size_or_content_differ(tmp_path: Path) -> None:
    path = recorded_file(tmp_path, b"x" * 5000)
    record = check_record(record_path(path), Record, VERSIONS)
    assert record.files["weights.bin"].size == 5000 and record.versions == VERSIONS
    with pytest.raises(CacheMiss, match="made with maker '1.0', here '2.0'"):
        check_record(record_path(path), Record, {**VERSIONS, "maker": "2.0"})
    with pytest.raises(CacheMiss, match="made with extra None, here 'y'"):
        check_record(record_path(path), Record, {**VERSIONS, "extra": "y"})
    path.write_bytes(b"x" * 4999)
    with pytest.raises(CacheMiss, match="has 4999 bytes, its record says 5000"):
        check_record(record_path(path), Record, VERSIONS)
    path.unlink()
    with pytest.raises(CacheMiss, match="No such file"):
        check_record(record_path(path), Record, VERSIONS)
    record_path(path).write_text('{"format": 1}')
    with pytest.raises(CacheMiss, match="is unreadable"):
        check_record(record_path(path), Record, VERSIONS)
    record_path(path).unlink()
    with pytest.raises(CacheMiss, match="no record"):
        check_record(record_path(path), Record, VERSIONS)


@pytest.mark.parametrize("where", [0, 1, 3 << 20, (7 << 20) - 1])
def test_one_byte_changed_anywhere_is_found(tmp_path: Path, where: int) -> None:
    """Wherever the byte is (sampled checks saw only some blocks of a large file), and with the modification time
    set back: the change moved the file's ctime, so the whole file is hashed, and the hash differs."""
    data = os.urandom(7 << 20)
    path = recorded_file(tmp_path, data)
    flip(path, where)
    with pytest.raises(CacheMiss, match="changed after its record was written"):
        check_record(record_path(path), Record, VERSIONS)
    flip(path, where)  # the same bytes again: the hash decides, and the record takes the file's new stamp
    first = check_record(record_path(path), Record, VERSIONS)
    assert first.files["weights.bin"].ctime_ns == path.stat().st_ctime_ns
    assert check_record(record_path(path), Record, VERSIONS) == first


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gigabytes of weights are hashed once, when written: a later start checks their stamp."""
    path = recorded_file(tmp_path, os.urandom(1 << 20))
    settle(record_path(path), path)
    monkeypatch.setattr(cache, "file_sha256", lambda p: pytest.fail(f"{p} was hashed"))
    assert check_record(record_path(path), Record, VERSIONS).files["weights.bin"].size == 1 << 20


def test_a_copied_cache_is_hashed_once_and_then_trusted_by_stamp(tmp_path: Path) -> None:
    path = recorded_file(tmp_path / "first", b"weights" * 1000)
    copy = tmp_path / "copy"
    shutil.copytree(path.parent, copy)  # new inodes and ctimes, the same bytes
    record = check_record(record_path(copy / path.name), Record, VERSIONS)
    assert record.files[path.name].inode == (copy / path.name).stat().st_ino
    decoded = msgspec.json.decode(record_path(copy / path.name).read_bytes(), type=Record)
    assert decoded == record  # re-stamped on disk


def test_what_others_could_have_written_is_not_trusted(tmp_path: Path) -> None:
    path = recorded_file(tmp_path, b"w" * 100)
    record_path(path).chmod(0o666)
    with pytest.raises(CacheMiss, match="could have been written by someone else"):
        check_record(record_path(path), Record, VERSIONS)
    record_path(path).chmod(0o600)
    path.chmod(0o620)
    with pytest.raises(CacheMiss, match="could have been written by someone else"):
        check_record(record_path(path), Record, VERSIONS)
    tmp_path.chmod(0o777)
    with pytest.raises(CacheNotPrivate, match="writable by its group or others"):
        check_record(record_path(path), Record, VERSIONS)


def test_files_in_subfolders_and_no_escape(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir(mode=0o777)
    (tmp_path / "unet").chmod(0o777)
    (tmp_path / "unet" / "config.json").write_text("{}")
    facts = describe_files(tmp_path, ["unet/config.json"])
    assert mode(tmp_path / "unet") == 0o755  # writable by its owner alone once recorded
    write_record(tmp_path / "record.json", Record(versions={}, files=facts, notes=None))
    check_record(tmp_path / "record.json", Record, {})
    (tmp_path / "unet").chmod(0o777)
    with pytest.raises(CacheMiss, match="writable by its group or others"):
        check_record(tmp_path / "record.json", Record, {})
    escaping = Record(versions={}, files={"../x": facts["unet/config.json"]}, notes=None)
    write_record(tmp_path / "record.json", escaping)
    with pytest.raises(CacheMiss, match="names a file outside its folder"):
        check_record(tmp_path / "record.json", Record, {})
