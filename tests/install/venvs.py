"""Fresh virtual environments for the install tests (pip from the machine's registries)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def pyenv_python(minor: str) -> str | None:
    """pyenv's newest ``minor`` (e.g. "3.9") interpreter, or None."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    found = sorted(Path(root, "versions").glob(f"{minor}.*/bin/python"))
    return str(found[-1]) if found else None


def python310() -> str:
    """INSTANTMESH_RPC_TEST_PY310 or pyenv's 3.10; skips the test where there is none."""
    found = os.environ.get("INSTANTMESH_RPC_TEST_PY310") or pyenv_python("3.10")
    if not found:
        pytest.skip("no Python 3.10 interpreter (pyenv's or INSTANTMESH_RPC_TEST_PY310)")
    return found


def make_venv(python: str, directory: Path, *packages: str) -> Path:
    """A venv at ``directory`` with ``packages`` pip-installed; returns its python."""
    subprocess.run([python, "-m", "venv", str(directory)], check=True)
    if packages:
        subprocess.run([str(directory / "bin" / "python"), "-m", "pip", "install", "-q", *packages], check=True)
    return directory / "bin" / "python"
