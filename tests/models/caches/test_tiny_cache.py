"""The tiny-weights cache is keyed by what produced it, so two environments never share one silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instantmesh import tiny


def test_key_changes_with_any_producer_version() -> None:
    versions = tiny.producer_versions()
    assert set(versions) == {"format", *tiny.PRODUCERS}
    other = dict(versions, transformers="4.34.1" if versions["transformers"] != "4.34.1" else "5.0.0")
    assert tiny.cache_key(versions) != tiny.cache_key(other)
    assert tiny.cache_key(versions) == tiny.cache_key(dict(versions))
    assert tiny.cache_key(versions).startswith(f"tiny-v{tiny.TINY_VERSION}-")


def test_a_folder_whose_manifest_disagrees_is_refused(tmp_path: Path) -> None:
    versions = tiny.producer_versions()
    folder = tmp_path / tiny.cache_key(versions)
    folder.mkdir()
    (folder / "complete").write_text(json.dumps(dict(versions, transformers="0.0.1")))
    with pytest.raises(tiny.TinyCacheMismatch, match="delete that folder"):
        tiny.ensure_tiny_weights(tmp_path)


def test_a_matching_manifest_is_used_without_rebuilding(tmp_path: Path) -> None:
    versions = tiny.producer_versions()
    folder = tmp_path / tiny.cache_key(versions)
    folder.mkdir()
    (folder / "complete").write_text(json.dumps(versions))
    weights = tiny.ensure_tiny_weights(tmp_path)
    assert weights.paths.lrm.parent == folder
