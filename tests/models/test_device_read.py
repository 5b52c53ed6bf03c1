"""The staged safetensors read (the CUDA path, run here on the CPU with small chunks) and its header check."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import load_file, save_file  # noqa: E402

from instantmesh.device_read import check_header, read_safetensors, read_staged  # noqa: E402
from instantmesh.weights_file import CheckpointError  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=generator),
        "norm.bias": torch.randn(37, generator=generator).half(),
        "big": torch.randn(1000, generator=generator).to(torch.bfloat16),
        "ids": torch.arange(13, dtype=torch.int64),
        "mask": torch.rand(5, generator=generator) > 0.5,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }


@pytest.mark.parametrize(("chunk", "lanes"), [(7, 1), (7, 3), (64, 2), (64, 8), (1 << 20, 4)])
def test_staged_read_gives_the_files_tensors(tmp_path: Path, chunk: int, lanes: int) -> None:
    path = tmp_path / "w.safetensors"
    save_file(_tensors(), str(path))
    expected = load_file(str(path))
    got = read_staged(path, torch.device("cpu"), chunk_bytes=chunk, lanes=lanes)  # tensors spanning chunks (and lanes)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape and torch.equal(got[name], tensor), (
            name
        )


def test_empty_tensors_beside_others_and_an_empty_file(tmp_path: Path) -> None:
    """Zero-size tensors share their offset with the next tensor: each chunk still finds every tensor it holds."""
    tensors = {
        "a_empty": torch.zeros(0),
        "b": torch.arange(10.0),
        "c_empty": torch.zeros(0, 3),
        "d": torch.arange(7, dtype=torch.int16),
    }
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    for chunk in (4, 40, 1 << 10):
        got = read_staged(path, torch.device("cpu"), chunk_bytes=chunk, lanes=2)
        assert all(torch.equal(got[k], v) for k, v in tensors.items()), chunk
    save_file({"only": torch.zeros(0)}, str(path))
    assert read_staged(path, torch.device("cpu"))["only"].numel() == 0


def test_cpu_read_is_the_mapped_load(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(_tensors(), str(path))
    got = read_safetensors(path, "cpu")
    assert all(torch.equal(got[k], v) for k, v in load_file(str(path)).items())


def test_truncated_padded_or_garbled_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(_tensors(), str(path))
    data = path.read_bytes()
    check_header(path)
    for name, content in (
        ("truncated", data[:-3]),
        ("padded", data + b"\0" * 8),
        ("garbled", data[:8] + b"x" + data[9:]),
        ("short", data[:5]),
    ):
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(CheckpointError):
            check_header(bad)
        with pytest.raises(CheckpointError):
            read_staged(bad, torch.device("cpu"))
