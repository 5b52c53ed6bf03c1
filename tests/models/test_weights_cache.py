"""The safetensors copy of a pickled weights file and the compile-cache folder: reused when valid, never trusted blindly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from instantmesh.compile_cache import compile_cache_dir, compile_key, use_compile_cache  # noqa: E402
from instantmesh.safetensors_cache import convert, valid_copy  # noqa: E402
from instantmesh.zero123plus.loading import read_state_dict  # noqa: E402


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
        assert torch.equal(first[name], tensor) and torch.equal(second[name], tensor) and second[name].dtype == tensor.dtype


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
    assert not list(root.glob(".*tmp")), "no temporary files left behind"


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
