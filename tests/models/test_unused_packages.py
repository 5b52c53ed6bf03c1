"""Packages the worker never uses are hidden from diffusers and transformers, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PROBE = """
import importlib.util, sys
sys.path.insert(0, sys.argv[1])
import fakepkg_used
from instantmesh import unused_packages
unused_packages.UNUSED_PACKAGES = ("fakepkg_unused", "fakepkg_used")
assert importlib.util.find_spec("fakepkg_unused") is not None
print(unused_packages.hide_unused_packages())
print(importlib.util.find_spec("fakepkg_unused"), sys.modules["fakepkg_used"] is not None)
try:
    import fakepkg_unused
except ImportError:
    print("refused")
"""


def test_an_unused_package_looks_absent_and_an_imported_one_is_left_alone(tmp_path: Path) -> None:
    for name in ("fakepkg_unused", "fakepkg_used"):
        (tmp_path / f"{name}.py").write_text("")
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:3] == ["['fakepkg_unused']", "None True", "refused"]
