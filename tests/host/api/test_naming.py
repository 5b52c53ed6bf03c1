"""Object names that fit the file system (host/api/naming.py) and where a map's files go (object_targets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from host.api.naming import UniqueNames, cut, plain_name_problem, readable, temporary_name
from host.api.outcome import OutputIsAnInput, object_targets


def test_names_are_cut_at_a_character_and_numbered_within_the_budget() -> None:
    assert cut("é" * 10, 5) == "éé" and cut("abc", 5) == "abc"
    names = UniqueNames(10)
    assert [names.take(stem) for stem in ("ééééééé", "éééééé", "plain", "plain")] == [
        "ééééé",
        "éééé-2",
        "plain",
        "plain-2",
    ]
    assert all(len(os.fsencode(name)) <= 10 for name in names.used)
    assert readable(os.fsdecode(b"caf\xe9")) == "caf\ufffd"


def test_temporary_names_always_fit_and_differ() -> None:
    long = "x" * 250 + ".png"
    first, second = temporary_name(long, 255), temporary_name(long, 255)
    assert first != second and first.startswith(".x") and first.endswith(".png")
    assert len(os.fsencode(first)) <= 255


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../up", "nul\0", os.fsdecode(b"\xff"), "y" * 246])
def test_a_given_name_must_be_a_plain_file_name_that_fits(bad: str) -> None:
    assert plain_name_problem(bad, 245) is not None
    assert plain_name_problem("fine name #1", 245) is None


def test_object_targets_fit_refuse_and_name_texture_files(tmp_path: Path) -> None:
    photo = tmp_path / f"{'é' * 125}x.png"
    photo.write_bytes(b"photo")
    (target,) = object_targets([photo], tmp_path / "out", format="obj", texture_map=True)
    assert len(os.fsencode(target.grid.name)) <= 255 and target.name == "é" * 122  # cut at a character
    assert [p.suffix for p in target.companions] == [".mtl", ".png"]
    with pytest.raises(ValueError, match=r"names\[0\] '\.\./x'"):
        object_targets([photo], tmp_path, names=["../x"])
    same = tmp_path / "mug.png"
    same.write_bytes(b"photo")
    with pytest.raises(OutputIsAnInput, match="the texture file of mug, is an input"):
        object_targets([same], tmp_path, texture_map=True)
    assert object_targets([same], tmp_path, format="glb", texture_map=True)[0].companions == ()
