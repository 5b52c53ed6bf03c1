"""Owner tags and the removal of what killed hosts left: only entries whose owner surely runs no more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from host.worker.owners import (
    Owner,
    folder_pattern,
    is_gone,
    owned_folder,
    owner_tag,
    parse_tag,
    remove_debris,
    this_host,
)

PATTERN = r"\.debris-(?P<owner>\d+-\d+-[0-9a-f]{8})-\w+"


def dead_owner() -> Owner:
    """The tag of a process that ran here and has exited (reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE)
    assert child.stdout is not None
    pid = int(child.stdout.read())
    child.wait()
    return Owner(pid, 1, this_host().place)


def test_this_host_is_alive_and_its_tag_round_trips() -> None:
    me = this_host()
    assert me.pid == os.getpid() and me.start > 0
    assert parse_tag(owner_tag()) == me
    assert not is_gone(me)
    assert parse_tag("12-x-abcdef01") is None and parse_tag("12-3") is None


def test_an_exited_process_a_reused_pid_and_a_zombie_are_gone_another_place_never() -> None:
    assert is_gone(dead_owner())
    me = this_host()
    assert is_gone(Owner(me.pid, me.start + 1, me.place)), "another start time is another process"
    assert not is_gone(Owner(dead_owner().pid, 1, "0" * 8)), "a pid of another machine or namespace proves nothing"
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while (fields := Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(") ", 1)[1].split())[0] != "Z":
            os.sched_yield()
        start = int(fields[19])
        assert is_gone(Owner(zombie.pid, start, me.place)), "a zombie writes nothing more"
    finally:
        zombie.wait()


def test_only_files_of_gone_owners_are_removed_never_a_symlink_or_another_kind(tmp_path: Path) -> None:
    dead, alive = dead_owner().tag, owner_tag()
    (tmp_path / f".debris-{dead}-a1").write_text("left by a killed host")
    (tmp_path / f".debris-{alive}-b2").write_text("a live host's")
    (tmp_path / f".debris-{dead}-c3").mkdir()  # a folder where files are made: not ours
    victim = tmp_path / "victim"
    victim.write_text("kept")
    (tmp_path / f".debris-{dead}-d4").symlink_to(victim)
    (tmp_path / f"debris-{dead}-e5").write_text("another shape")
    assert remove_debris(tmp_path, PATTERN, "file") == [f".debris-{dead}-a1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".debris-{alive}-b2", f".debris-{dead}-c3", f".debris-{dead}-d4", f"debris-{dead}-e5", "victim"]
    )
    assert victim.read_text() == "kept"


def test_folders_of_gone_owners_go_whole_without_following_a_symlink_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    parent = tmp_path / "shm"
    parent.mkdir()
    left = parent / f"instantmesh-pool-{dead_owner().tag}-abc_123"
    left.mkdir()
    (left / "grid.png").write_bytes(b"png")
    (left / "link").symlink_to(outside, target_is_directory=True)
    made = Path(owned_folder("instantmesh-pool-", parent))
    assert not left.exists() and (outside / "keep").read_text() == "kept"
    assert made.parent == parent and made.name.startswith(f"instantmesh-pool-{owner_tag()}-")
    assert remove_debris(parent, folder_pattern("instantmesh-pool-"), "folder") == [], "a live host's folder stays"
    assert made.is_dir()


def test_a_symlinked_folder_is_not_looked_through_unless_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / f".debris-{dead_owner().tag}-a1").write_text("x")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert remove_debris(tmp_path / "link", PATTERN, "file", follow=False) == []
    assert len(remove_debris(tmp_path / "link", PATTERN, "file")) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_another_users_file_is_left(tmp_path: Path) -> None:
    name = f".debris-{dead_owner().tag}-a1"
    (tmp_path / name).write_text("theirs")
    os.chown(tmp_path / name, 12345, 12345)
    assert remove_debris(tmp_path, PATTERN, "file") == []
