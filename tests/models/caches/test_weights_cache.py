"""The safetensors copy of a pickled weights file and the compile-cache folder: reused when valid, never trusted blindly."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from instantmesh import safetensors_cache  # noqa: E402
from instantmesh.compile_cache import compile_cache_dir, compile_key, use_compile_cache  # noqa: E402
from instantmesh.safetensors_cache import SAMPLE_BLOCKS, cached_read, convert, copy_paths, valid_copy  # noqa: E402
from instantmesh.weights_file import CheckpointError  # noqa: E402
from instantmesh.zero123plus.loading import read_state_dict  # noqa: E402
from rpcworker.wire.cache import PARTIAL_MARK, CacheNotPrivate  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]


def _pickle(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = {"a.weight": torch.randn(64, 64), "b.bias": torch.randn(7).half()}
    torch.save(state, path)
    return state


def test_copy_is_made_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTANTMESH_RPC_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "unet.bin"
    state = _pickle(source)
    assert valid_copy(source, tmp_path / "cache" / "safetensors") is None
    first = read_state_dict(source)
    copy = valid_copy(source, tmp_path / "cache" / "safetensors")
    assert copy is not None and copy.suffix == ".safetensors"
    second = read_state_dict(source)
    for name, tensor in state.items():
        assert (
            torch.equal(first[name], tensor)
            and torch.equal(second[name], tensor)
            and second[name].dtype == tensor.dtype
        )


def test_a_changed_source_or_a_damaged_copy_is_not_used(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    source = tmp_path / "w.bin"
    convert(source, _pickle(source), root)
    copy = valid_copy(source, root)
    assert copy is not None
    with open(copy, "r+b") as f:  # same size, different bytes
        f.seek(200)
        f.write(b"\xff" * 8)
    assert valid_copy(source, root) is None
    convert(source, _pickle(source), root)
    assert valid_copy(source, root) is not None
    _pickle(source, seed=1)  # the source file is replaced
    os.utime(source, ns=(1, 1))
    assert valid_copy(source, root) is None
    assert not list(root.glob(f"*{PARTIAL_MARK}*")), "no temporary files left behind"


def _reads(source: Path, root: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """cached_read of `source`, and whether it had to unpickle (i.e. rebuild the copy)."""
    calls: list[str] = []

    def extract() -> dict[str, torch.Tensor]:
        calls.append("unpickled")
        return torch.load(source, weights_only=True)

    return cached_read(source, root, "cpu", extract), calls


def test_a_truncated_or_damaged_copy_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    source = tmp_path / "w.bin"
    state = _pickle(source)
    assert _reads(source, root)[1] == ["unpickled"]
    assert _reads(source, root)[1] == [], "a valid copy is read, the pickle is not"
    copy = valid_copy(source, root)
    assert copy is not None
    data = copy.read_bytes()
    for damaged in (data[: len(data) // 2], data[:8] + b"x" + data[9:]):
        copy.write_bytes(damaged)
        got, calls = _reads(source, root)
        assert calls == ["unpickled"] and all(torch.equal(got[k], v) for k, v in state.items())
        assert valid_copy(source, root) is not None and valid_copy(source, root).read_bytes() == data


def test_one_byte_changed_between_the_old_sampled_blocks_is_found_and_rebuilt(tmp_path: Path) -> None:
    """The copy was once checked by 16 sampled blocks of 1 MiB: a byte between them passed. Now it was hashed whole
    when written, and any later write moves its stamp; the modification time set back changes nothing."""
    root = tmp_path / "cache"
    source = tmp_path / "w.bin"
    torch.manual_seed(0)
    torch.save({"big": torch.randn(6 << 20)}, source)  # 24 MiB of float32: larger than the samples covered
    assert _reads(source, root)[1] == ["unpickled"]
    copy, record = copy_paths(source, root)
    data = copy.read_bytes()
    step = (len(data) - (1 << 20)) // (SAMPLE_BLOCKS - 1)
    where = step + (1 << 20) + (step - (1 << 20)) // 2  # after the second sampled block, before the third
    assert step > (1 << 20) and where < 2 * step
    before = copy.stat()
    with copy.open("r+b") as f:
        f.seek(where)
        f.write(bytes([data[where] ^ 0x01]))
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert valid_copy(source, root) is None
    got, calls = _reads(source, root)
    assert calls == ["unpickled"] and torch.equal(got["big"], torch.load(source, weights_only=True)["big"])
    assert copy.read_bytes() == data and valid_copy(source, root) == copy  # rebuilt, whole
    assert record.is_file()


def test_a_copy_in_a_cache_others_can_write_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    source = tmp_path / "w.bin"
    convert(source, _pickle(source), root)
    root.chmod(0o775)
    with pytest.raises(CacheNotPrivate, match=f"cache folder {root} is writable by its group or others"):
        _reads(source, root)


def test_a_copy_that_fails_while_read_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage the sampled checks cannot see shows up at the read: the pickle is read instead and the copy rewritten."""
    root = tmp_path / "cache"
    source = tmp_path / "w.bin"
    state = _pickle(source)
    convert(source, state, root)
    real = safetensors_cache.read_safetensors

    def failing(path: Path, device: str) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(safetensors_cache, "read_safetensors", real)
        raise CheckpointError(f"{path}: file ended while reading tensors (truncated)")

    monkeypatch.setattr(safetensors_cache, "read_safetensors", failing)
    got, calls = _reads(source, root)
    assert calls == ["unpickled"] and all(torch.equal(got[k], v) for k, v in state.items())
    assert _reads(source, root)[1] == []


def test_a_source_replaced_with_the_same_size_and_time_invalidates(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    source = tmp_path / "w.bin"
    convert(source, _pickle(source), root)
    before = source.stat()
    (tmp_path / "new").mkdir()
    replacement = tmp_path / "new" / "w.bin"  # the same name: torch.save's archive then has the same size
    _pickle(replacement, seed=1)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, source)
    assert source.stat().st_size == before.st_size and source.stat().st_mtime_ns == before.st_mtime_ns
    assert valid_copy(source, root) is None
    got, calls = _reads(source, root)
    assert calls == ["unpickled"] and torch.equal(got["a.weight"], torch.load(source, weights_only=True)["a.weight"])


@pytest.mark.needs(
    "torch", (2, 4), "the compile cache sets Inductor's FX graph cache, as compile itself needs torch 2.4+"
)
def test_compile_cache_folder_is_keyed_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    key = compile_key(torch.device("cpu"), {"unet": "x", "size": 1}, ["compile"])
    other = compile_key(torch.device("cpu"), {"unet": "x", "size": 2}, ["compile"])
    folder = compile_cache_dir(key, tmp_path)
    assert folder != compile_cache_dir(other, tmp_path) and folder == compile_cache_dir(dict(key), tmp_path)
    assert use_compile_cache(folder, key) is False
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(folder))
    assert use_compile_cache(folder, key) is False, "folders alone are no compiled artefacts"
    (folder / "inductor").mkdir(exist_ok=True)
    (folder / "inductor" / "graph").write_text("compiled")
    assert use_compile_cache(folder, key) is True
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
