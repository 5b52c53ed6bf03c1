"""The README's Python snippet runs as written, twice in a row, and says when it fell back to the tiny preset."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MODELS_PYTHON, ROOT

pytestmark = [pytest.mark.models, pytest.mark.slow]


def _snippet() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return next(b for b in blocks if "with InstantMeshWorker() as worker" in b)


def test_readme_snippet_twice(tmp_path: Path, tiny_cache: Path) -> None:
    if not MODELS_PYTHON.exists():
        pytest.fail(f"{MODELS_PYTHON} missing: run scripts/setup.sh")
    for name, source in (("mug.png", "mug.png"), ("bowl.png", "ball.png"), ("drill.png", "box.png")):
        shutil.copy(ROOT / "examples" / "inputs" / source, tmp_path / name)
    (tmp_path / "snippet.py").write_text("import warnings\nwarnings.simplefilter('always')\n" + _snippet())
    env = dict(os.environ, PYTHONPATH=str(ROOT), INSTANTMESH_RPC_PYTHON=str(MODELS_PYTHON), INSTANTMESH_RPC_CACHE=str(tiny_cache))
    for run in (1, 2):
        out = subprocess.run([str(MODELS_PYTHON), "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"run {run}: {out.stderr[-3000:]}"
        assert "TinyFallbackWarning" in out.stderr, out.stderr[-2000:]
        assert "tiny (random weights" in out.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["bowl.glb", "drill.glb", "mug.obj", "mug_views.png"]
