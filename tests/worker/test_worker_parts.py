"""The worker's pieces that need no process: handles, output rules, image checks, mock options."""

from __future__ import annotations

import os

import pytest

from rpcworker.backends.mock import MockOptions
from rpcworker.handles import ViewStore
from rpcworker.images import load_input_image, load_views_grid
from rpcworker.outputs import OutputPolicy, atomic_output
from rpcworker.wire.errors import HandleExpired, InputNotFound, InputUnreadable, InvalidParams, OutputRefused
from rpcworker.wire.messages import ImagePath, ImagePng, ViewsGridPng


def test_view_store_evicts_least_recently_used() -> None:
    store = ViewStore(2)
    a, b = store.put("A", 1), store.put("B", 1)
    store.get(b)
    store.get(a)
    c = store.put("C", 1)
    assert store.get(a)[0] == "A" and store.get(c)[0] == "C"
    with pytest.raises(HandleExpired, match="evicted") as info:
        store.get(b)
    assert info.value.data["reason"].startswith("evicted") and info.value.data["max_handles"] == 2


def test_view_store_keeps_views_waiting_for_their_reconstruct() -> None:
    """A host keeping `capacity` objects in flight: the views reconstructed already go first, however recent."""
    store = ViewStore(3)
    a, b = store.put("A", 1), store.put("B", 1)
    store.get(a)  # A reconstructed (and now the most recently used); B still waits
    c, d = store.put("C", 1), store.put("D", 1)
    assert [store.get(h)[0] for h in (b, c, d)] == ["B", "C", "D"]
    with pytest.raises(HandleExpired, match="evicted"):
        store.get(a)
    e = store.put("E", 1)  # every kept view has been used now: plain LRU, B goes
    assert [store.get(h)[0] for h in (c, d, e)] == ["C", "D", "E"] and len(store) == 3
    with pytest.raises(HandleExpired):
        store.get(b)


def test_view_store_names_foreign_and_bogus_handles() -> None:
    store, other = ViewStore(2), ViewStore(2)
    with pytest.raises(HandleExpired, match="another worker"):
        store.get(other.put("x", 1))
    with pytest.raises(HandleExpired, match="not a views handle"):
        store.get("nonsense")


def test_output_policy(tmp_path) -> None:
    policy = OutputPolicy(str(tmp_path / "root"))
    with pytest.raises(InvalidParams, match="absolute"):
        policy.check("relative.obj", "output_path", False)
    with pytest.raises(OutputRefused, match="outside"):
        policy.check(str(tmp_path / "elsewhere.obj"), "output_path", False)
    with pytest.raises(OutputRefused, match="outside"):
        policy.check(str(tmp_path / "root" / ".." / "escape.obj"), "output_path", False)
    inside = tmp_path / "root" / "sub" / "m.obj"
    assert policy.check(str(inside), "output_path", False) == str(inside)
    inside.parent.mkdir(parents=True)
    inside.write_text("old")
    with pytest.raises(OutputRefused, match="exists"):
        policy.check(str(inside), "output_path", False)
    assert policy.check(str(inside), "output_path", True) == str(inside)
    with pytest.raises(OutputRefused, match="directory"):
        policy.check(str(inside.parent), "output_path", True)


def test_atomic_output_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "out" / "mesh.obj"
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash while writing")
    assert not target.exists() and os.listdir(target.parent) == []
    with atomic_output(str(target)) as tmp:
        with open(tmp, "w") as f:
            f.write("whole")
    assert target.read_text() == "whole" and os.listdir(target.parent) == ["mesh.obj"]


def test_a_write_removes_only_stale_temporary_files_of_dead_writers(tmp_path) -> None:
    import subprocess
    import sys
    import time

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    old = time.time() - 60
    debris = {
        f".mesh.partial-{dead_pid}-a1b2c3.obj": old,  # dead and stale: removed
        f".mesh.partial-{dead_pid}-d4e5f6.obj": time.time(),  # dead but fresh (maybe another machine's): kept
        f".mesh.partial-{os.getpid()}-0a0b0c.obj": old,  # a live writer's: kept
        f".other.partial-{dead_pid}-a1b2c3.obj": old,  # another target's: kept
    }
    for name, mtime in debris.items():
        (tmp_path / name).write_text("half")
        os.utime(tmp_path / name, (mtime, mtime))
    with atomic_output(str(tmp_path / "mesh.obj")) as tmp:
        with open(tmp, "w") as f:
            f.write("whole")
    assert sorted(os.listdir(tmp_path)) == sorted(["mesh.obj", *list(debris)[1:]])


def _png(size=(64, 64), mode="RGBA") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_input_image_errors(tmp_path) -> None:
    with pytest.raises(InputNotFound):
        load_input_image(ImagePath(str(tmp_path / "missing.png")))
    with pytest.raises(InputUnreadable, match="directory"):
        load_input_image(ImagePath(str(tmp_path)))
    with pytest.raises(InvalidParams, match="absolute"):
        load_input_image(ImagePath("x.png"))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(_png()[:40])
    with pytest.raises(InputUnreadable, match="corrupt.png"):
        load_input_image(ImagePath(str(corrupt)))
    with pytest.raises(InputUnreadable, match="smaller"):
        load_input_image(ImagePng(_png((4, 4))))
    with pytest.raises(InputUnreadable, match="mode"):
        load_input_image(ImagePng(_png(mode="I;16")))
    assert load_input_image(ImagePng(_png())).mode == "RGBA"


def test_grid_must_be_three_by_two() -> None:
    with pytest.raises(InputUnreadable, match="3 rows x 2 columns"):
        load_views_grid(ViewsGridPng(_png((64, 64), "RGB")))
    assert load_views_grid(ViewsGridPng(_png((64, 96), "RGB"))).size == (64, 96)


def test_mock_options_parse() -> None:
    opts = MockOptions.parse("step_delay=0.5,oom_once=reconstruct+load,noisy,view_size=32")
    assert opts.step_delay == 0.5 and opts.oom_once == {"reconstruct", "load"} and opts.noisy and opts.view_size == 32
    with pytest.raises(ValueError, match="unknown mock option"):
        MockOptions.parse("nope=1")
