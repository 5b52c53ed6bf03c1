"""``batch --report``: the page opens offline in headless Chromium and every mesh renders (non-blank canvas).

Needs node, Debian's chromium and playwright-core; scripts/setup.sh installs them (chromium through
apt-get when it runs as root) and vendors @google/model-viewer. Each missing piece skips with its name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from host.cli.report import ASSETS, VIEWER_SCRIPT
from tests.conftest import HOST_PYTHON, ROOT, WORKER_PYTHON

pytestmark = [pytest.mark.cli, pytest.mark.browser]

NODE_MODULES = Path(os.environ.get("INSTANTMESH_RPC_NODE_MODULES", ROOT / ".venvs" / "report-node" / "node_modules"))
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or ""


def _needs() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the report test drives Chromium through playwright-core)")
    if not CHROMIUM:
        pytest.skip("chromium is not installed: apt-get install chromium (scripts/setup.sh does, as root)")
    if not (NODE_MODULES / "playwright-core").is_dir():
        pytest.skip(f"playwright-core missing under {NODE_MODULES}: run scripts/setup.sh")
    if not (ASSETS / VIEWER_SCRIPT).is_file():
        pytest.fail(f"{ASSETS / VIEWER_SCRIPT} missing: scripts/setup.sh vendors it from npm")


def test_report_loads_offline_and_every_mesh_renders(tmp_path: Path) -> None:
    _needs()
    inputs = ROOT / "examples" / "inputs"
    out = tmp_path / "out"
    batch = subprocess.run(
        [
            str(HOST_PYTHON),
            "-m",
            "host",
            "batch",
            str(inputs),
            "--out",
            str(out),
            "--report",
            "--python",
            str(WORKER_PYTHON),
            "--mock",
            "step_delay=0",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert batch.returncode == 0, batch.stdout + batch.stderr
    page = out / "index.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text, "the page must not reference the network"
    shots = tmp_path / "shots"
    shots.mkdir()
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES), CHROMIUM=CHROMIUM)
    run = subprocess.run(
        ["node", str(ROOT / "tests" / "host" / "cli" / "render_report.js"), str(page), str(shots)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen == {"viewers": 3, "external": [], "errors": []}, seen

    import numpy as np
    from PIL import Image

    for i in range(3):
        pixels = np.asarray(Image.open(shots / f"viewer-{i}.png").convert("RGB")).astype(float)
        assert pixels.std() > 10.0, f"viewer {i} looks blank (std {pixels.std():.1f})"
        not_white = (pixels.min(axis=2) < 230).mean()
        assert not_white > 0.1, f"viewer {i}: only {not_white:.0%} of its pixels are drawn"
    if os.environ.get("INSTANTMESH_RPC_REPORT_SCREENSHOT"):
        shutil.copyfile(shots / "page.png", os.environ["INSTANTMESH_RPC_REPORT_SCREENSHOT"])
