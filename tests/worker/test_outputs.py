"""Output rules (rpcworker/outputs.py): where outputs may go, atomic writes, and clearing dead writers' temporary files."""

from __future__ import annotations

import os

import pytest

from rpcworker.outputs import OutputPolicy, atomic_output
from rpcworker.wire.errors import InvalidParams, OutputRefused


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
    with pytest.raises(RuntimeError), atomic_output(str(target)) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("crash while writing")
    assert not target.exists() and os.listdir(target.parent) == []
    with atomic_output(str(target)) as tmp, open(tmp, "w") as f:
        f.write("whole")
    assert target.read_text() == "whole" and os.listdir(target.parent) == ["mesh.obj"]


def test_a_write_removes_only_stale_temporary_files_of_dead_writers(tmp_path) -> None:
    import subprocess
    import sys
    import time

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
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
    with atomic_output(str(tmp_path / "mesh.obj")) as tmp, open(tmp, "w") as f:
        f.write("whole")
    assert sorted(os.listdir(tmp_path)) == sorted(["mesh.obj", *list(debris)[1:]])


def test_the_root_holds_when_the_file_is_written(tmp_path) -> None:
    """A folder on the way swapped for a symlink between the check and the write: leading outside the root, the
    write is refused and nothing lands anywhere; leading inside, the file lands where it leads; a folder that keeps
    turning into a symlink loop is refused; missing folders are made on the way."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    (root / "inside").mkdir()
    outside.mkdir()
    policy = OutputPolicy(str(root))
    checked = policy.check(str(root / "a" / "m.obj"), "output_path", False)
    (root / "a").rename(root / "a-moved")
    (root / "a").symlink_to(outside, target_is_directory=True)
    refused = pytest.raises(OutputRefused, match="outside the worker's output root")
    with refused as info, atomic_output(checked, False, root=policy.root) as tmp, open(tmp, "w") as f:
        f.write("mesh")
    assert info.value.data["reason"] == "outside output root"
    assert os.listdir(outside) == [] and os.listdir(root / "a-moved") == []

    checked = policy.check(str(root / "b" / "new" / "m.obj"), "output_path", False)  # b does not exist yet
    (root / "b").symlink_to(root / "inside", target_is_directory=True)
    with atomic_output(checked, False, root=policy.root) as tmp, open(tmp, "w") as f:
        f.write("mesh")
    assert (root / "inside" / "new" / "m.obj").read_text() == "mesh"

    (root / "loop").symlink_to(root / "loop")
    with (
        pytest.raises(OutputRefused, match="symlink"),
        atomic_output(str(root / "loop" / "m.obj"), False, root=policy.root),
    ):
        pass
