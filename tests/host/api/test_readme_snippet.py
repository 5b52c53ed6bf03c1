"""The README's Python snippet runs as written, twice in a row.

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
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return next(b for b in blocks if "with InstantMeshWorker(progress=True) as worker" in b)


def test_readme_snippet_twice(tmp_path: Path) -> None:
    pairs = (
        ("mug.png", "mug.png"),
        ("bowl.png", "ball.png"),
        ("drill.png", "box.png"),
        ("drill_mask.png", "box_mask.png"),
    )
    for name, source in pairs:  # the drill has no alpha and no white backdrop: its mask file outlines it
        shutil.copy(ROOT / "examples" / "inputs" / source, tmp_path / name)
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
        "bowl.glb",
        "drill.glb",
        "mug.obj",
        "mug_views.png",
    ]
