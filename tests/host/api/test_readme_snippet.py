"""The README's Python blocks run as written (there is one, the API's), twice in a row, on examples/inputs.

The snippet asks for the official weights and 75 steps per object; to keep the suite short it runs against
the mock backend, through a worker "interpreter" that appends ``--backend mock`` (argparse keeps the last).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MODELS_PYTHON, ROOT, WORKER_PYTHON

pytestmark = pytest.mark.cli


def _snippet() -> str:
    """Every Python block of the README, as one program: each must run (there is no block for show only)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks and "with InstantMeshWorker(progress=True) as worker" in blocks[0]
    return "\n".join(blocks)


def test_readme_snippet_twice(tmp_path: Path) -> None:
    for name in ("mug.png", "ball.png", "box.png", "box_mask.png"):  # the box's mask file outlines it
        shutil.copy(ROOT / "examples" / "inputs" / name, tmp_path / name)
    wrapper = tmp_path / "mockpython"
    wrapper.write_text(f'#!/bin/sh\nexec "{WORKER_PYTHON}" "$@" --backend mock --mock step_delay=0\n')
    wrapper.chmod(0o755)
    (tmp_path / "snippet.py").write_text(_snippet())
    env = dict(os.environ, PYTHONPATH=str(ROOT), INSTANTMESH_RPC_PYTHON=str(wrapper))
    for run in (1, 2):
        out = subprocess.run(
            [str(MODELS_PYTHON), "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, f"run {run}: {out.stderr[-3000:]}"
        assert "views: 75 diffusion steps ..." in out.stderr and "mesh: reconstructing ..." in out.stderr, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "ball.glb",
        "box.glb",
        "mug.obj",
        "mug_views.png",
    ]
