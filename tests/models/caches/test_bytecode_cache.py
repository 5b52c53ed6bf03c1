"""The worker's bytecode cache: used only where the environment keeps no bytecode for its heaviest import."""

from __future__ import annotations

import importlib
import importlib.util
import os
import py_compile
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from instantmesh.bytecode_cache import PYCACHE_ENV, use_bytecode_cache

PROBE = "bytecode_probe_pkg"


@pytest.fixture()
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package on sys.path with no bytecode, and this process's bytecode settings restored afterwards."""
    package = tmp_path / "site" / PROBE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(sys, "pycache_prefix", None)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delenv(PYCACHE_ENV, raising=False)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    monkeypatch.delitem(sys.modules, PROBE, raising=False)
    importlib.invalidate_caches()
    return package / "__init__.py"


def test_missing_bytecode_that_would_not_be_written_goes_to_the_cache(probe: Path, tmp_path: Path) -> None:
    folder = use_bytecode_cache(tmp_path / "cache", PROBE)
    assert (
        folder == tmp_path / "cache" / "pycache" and sys.pycache_prefix == str(folder) and not sys.dont_write_bytecode
    )
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # Python runs what it finds there: this user's alone
    module = importlib.import_module(PROBE)
    assert module.VALUE == 42
    cached = Path(module.__cached__)
    assert cached.is_relative_to(folder) and cached.exists()  # written there, at the first import
    assert not (probe.parent / "__pycache__").exists()
    assert (
        os.environ["PYTHONPYCACHEPREFIX"] == str(folder) and "PYTHONDONTWRITEBYTECODE" not in os.environ
    )  # for its children


def test_the_environment_is_left_alone_where_bytecode_is_there_or_will_be(
    probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert use_bytecode_cache(tmp_path / "cache", PROBE) is None  # Python writes it beside the source itself
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    py_compile.compile(str(probe), cfile=importlib.util.cache_from_source(str(probe)))
    assert use_bytecode_cache(tmp_path / "cache", PROBE) is None  # shipped with its bytecode
    assert sys.pycache_prefix is None and sys.dont_write_bytecode and not (tmp_path / "cache").exists()
    assert "PYTHONPYCACHEPREFIX" not in os.environ and os.environ["PYTHONDONTWRITEBYTECODE"] == "1"


def test_off_a_chosen_folder_a_users_prefix_and_no_probe(
    probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PYCACHE_ENV, "off")
    assert use_bytecode_cache(tmp_path / "cache", PROBE) is None and sys.pycache_prefix is None
    assert use_bytecode_cache(tmp_path / "cache", "no_such_package_here") is None
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "theirs"))
    monkeypatch.delenv(PYCACHE_ENV)
    assert use_bytecode_cache(tmp_path / "cache", PROBE) is None and sys.pycache_prefix == str(tmp_path / "theirs")
    monkeypatch.setattr(sys, "pycache_prefix", None)
    monkeypatch.setenv(PYCACHE_ENV, str(tmp_path / "chosen"))
    assert use_bytecode_cache(tmp_path / "cache", PROBE) == tmp_path / "chosen"


def test_a_second_process_reads_what_the_first_wrote(probe: Path, tmp_path: Path) -> None:
    """As two worker starts in an image with PYTHONDONTWRITEBYTECODE=1: the second finds the first one's bytecode."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
        "from instantmesh.bytecode_cache import use_bytecode_cache; "
        f"print(use_bytecode_cache(Path(sys.argv[2]), {PROBE!r})); import {PROBE} as m; print(m.__cached__)"
    )
    env = {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }

    def start() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", code, str(probe.parents[1]), str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        return done.stdout.split()

    first = start()
    cached = Path(first[1])
    assert first[0] == str(tmp_path / "cache" / "pycache") and cached.exists()
    written = cached.stat().st_mtime_ns
    assert start() == first and cached.stat().st_mtime_ns == written  # read, not compiled and written again


def test_a_folder_others_can_write_is_refused_with_one_line(
    probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Python runs the bytecode it finds there: a folder anyone else could write to is not used."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(PYCACHE_ENV, str(shared))
    assert use_bytecode_cache(tmp_path / "cache", PROBE) is None and sys.pycache_prefix is None
    assert "PYTHONPYCACHEPREFIX" not in os.environ
    (refusal,) = [r.getMessage() for r in caplog.records if "no bytecode cache" in r.getMessage()]
    assert "\n" not in refusal and f"cache folder {shared} is writable by its group or others" in refusal
