"""The tiny-weights cache is keyed by what produced it, so two environments never share one silently, and used
only while its record vouches for every file in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from instantmesh import tiny
from rpcworker.wire.cache import write_record


def test_key_changes_with_any_producer_version() -> None:
    versions = tiny.producer_versions()
    assert set(versions) == {"format", *tiny.PRODUCERS}
    other = dict(versions, transformers="4.34.1" if versions["transformers"] != "4.34.1" else "5.0.0")
    assert tiny.cache_key(versions) != tiny.cache_key(other)
    assert tiny.cache_key(versions) == tiny.cache_key(dict(versions))
    assert tiny.cache_key(versions).startswith(f"tiny-v{tiny.TINY_VERSION}-")


def test_a_folder_whose_record_disagrees_is_refused(tmp_path: Path) -> None:
    versions = tiny.producer_versions()
    folder = tmp_path / tiny.cache_key(versions)
    folder.mkdir()
    other = tiny.TinyRecord(versions=dict(versions, transformers="0.0.1"), files={}, notes=None)
    write_record(folder / tiny.RECORD_NAME, other)
    with pytest.raises(tiny.TinyCacheMismatch, match="delete that folder"):
        tiny.ensure_tiny_weights(tmp_path)


def test_a_matching_record_is_used_without_rebuilding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = tiny.producer_versions()
    folder = tmp_path / tiny.cache_key(versions)
    folder.mkdir()
    write_record(folder / tiny.RECORD_NAME, tiny.TinyRecord(versions=versions, files={}, notes=None))
    monkeypatch.setattr(tiny, "_write_tiny", lambda staging: pytest.fail("built again"))
    weights = tiny.ensure_tiny_weights(tmp_path)
    assert weights.paths.lrm.parent == folder


def test_a_damaged_or_unrecorded_folder_is_made_again(tmp_path: Path) -> None:
    weights = tiny.ensure_tiny_weights(tmp_path)
    unet = weights.paths.whitebg_unet
    data = unet.read_bytes()
    with unet.open("r+b") as f:  # one byte of the weights, the file's size unchanged
        f.seek(len(data) // 2)
        f.write(bytes([data[len(data) // 2] ^ 0xFF]))
    assert tiny.ensure_tiny_weights(tmp_path) == weights and unet.read_bytes() == data
    (unet.parents[1] / tiny.RECORD_NAME).unlink()  # as a folder an older version left
    assert tiny.ensure_tiny_weights(tmp_path) == weights and unet.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [unet.parents[1].name]  # no staging folder left
