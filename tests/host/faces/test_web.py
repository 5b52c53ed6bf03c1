"""``python -m host web``: the page in headless Chromium over a mock worker, and what the command refuses at start.

The browser test needs node, Debian's chromium and playwright-core (scripts/setup.sh installs them, as for the report
test) and gradio in the host env (the ``web`` extra); each missing piece skips with its name. Nothing reaches the
network: the server binds 127.0.0.1, gradio's analytics are off, and Chromium resolves no other name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from host.cli.main import build_parser
from host.cli.web_command import LOCAL_HOST, exposure_warning
from tests.conftest import HOST_PYTHON, ROOT, WORKER_PYTHON
from tests.host.cli.test_report import CHROMIUM, NODE_MODULES

pytestmark = pytest.mark.cli

INPUTS = ROOT / "examples" / "inputs"
START_DEADLINE_S = 120.0
STOP_DEADLINE_S = 60.0
STEP_DELAY_S = 0.05
"""Per diffusion step of the mock: 5 steps are quick, the 1000 of the cancelled object take 50 s."""


def _host_env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), GRADIO_TEMP_DIR=str(tmp_path / "gradio"))


def _web(tmp_path: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HOST_PYTHON), "-m", "host", "web", "--out", str(tmp_path / "out"), *extra],
        cwd=tmp_path,
        env=_host_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_page_binds_to_this_machine_unless_told() -> None:
    args = build_parser().parse_args(["web"])
    assert (args.host, args.port, args.out) == (LOCAL_HOST, 7860, "outputs/web")
    assert all(exposure_warning(name) is None for name in ("127.0.0.1", "localhost", "::1"))
    assert "no login" in (exposure_warning("0.0.0.0") or "")


def test_the_banner_flags_every_weight_but_the_official_and_refusals_use_the_page_words() -> None:
    pytest.importorskip("gradio", reason="the page is built on gradio: pip install 'instantmesh-rpc[web]'")
    from host.api.options import view_options_of
    from host.faces.web_page import Banner, in_page_terms
    from rpcworker.wire.errors import InvalidParams

    tiny = Banner("tiny (random weights, NOT the official models: outputs are noise)", "tiny", "cpu").html()
    assert 'class="not-official"' in tiny and "RANDOM WEIGHTS" in tiny and "NOT the official models" in tiny
    official = Banner("InstantMesh (Zero123++ v1.2 + instant_mesh_large)", "official", "cuda").html()
    assert 'class="official"' in official and "⚠" not in official
    assert 'data-weights="unknown"' in Banner("older worker", None, "").html()
    with pytest.raises(InvalidParams) as refused:
        view_options_of(num_inference_steps=0)
    assert in_page_terms(refused.value) == "diffusion steps: expected a whole number >= 1"


def test_another_host_is_warned_about_before_anything_starts(tmp_path: Path) -> None:
    done = _web(tmp_path, "--host", "0.0.0.0", "--port", "0", "--python", str(tmp_path / "no-such-python"))
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("warning: --host 0.0.0.0 serves the page beyond this machine"), done.stderr
    assert done.returncode == 2 and len(lines) == 2 and lines[1].startswith("error: "), done.stderr


def test_a_port_in_use_is_one_line_before_the_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOCAL_HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _web(tmp_path, "--port", str(port), "--python", str(WORKER_PYTHON), "--backend", "mock")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on {LOCAL_HOST}:{port}: Address already in use; choose --port N (0 picks a free one)"
    ]
    assert "starting the worker" not in done.stdout


def test_without_gradio_the_command_names_the_install_in_one_line(tmp_path: Path) -> None:
    """The CLI itself never imports gradio; the web command without it says how to get it, and starts nothing."""
    code = (
        "import sys\n"
        "sys.modules['gradio'] = None  # as if not installed\n"
        "from host.cli.main import main\n"
        f"sys.exit(main(['web', '--out', {str(tmp_path / 'out')!r}, '--backend', 'mock']))\n"
    )
    done = subprocess.run([str(HOST_PYTHON), "-c", code], env=_host_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: the web command needs gradio in the host's Python ({HOST_PYTHON}): pip install "
        "'instantmesh-rpc[web]' (scripts/setup.sh installs it into .venvs/host)"
    ], done.stderr
    assert done.stdout == ""
    probe = "import sys, host.cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))"
    imported = subprocess.run([str(HOST_PYTHON), "-c", probe], env=_host_env(tmp_path), capture_output=True, text=True)
    assert imported.stdout.strip() == "[]", imported.stdout + imported.stderr


class Server:
    """``python -m host web`` on a free port with a mock worker, stopped (and checked stopped) by the fixture."""

    def __init__(self, tmp_path: Path) -> None:
        self.out = tmp_path / "out"
        self.process = subprocess.Popen(
            [
                str(HOST_PYTHON),
                "-m",
                "host",
                "web",
                "--port",
                "0",
                "--out",
                str(self.out),
                "--python",
                str(WORKER_PYTHON),
                "--mock",
                f"step_delay={STEP_DELAY_S}",
            ],  # fmt: skip
            cwd=tmp_path,
            env=_host_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # SIGINT as at a person's terminal (a background job would pass it on ignored): Ctrl-C stops the page.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: list[str] = []
        deadline = threading.Timer(START_DEADLINE_S, self.process.kill)
        deadline.start()
        try:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                if line.startswith("web page: "):
                    break
        finally:
            deadline.cancel()
        ready = [line for line in self.lines if line.startswith("web page: ")]
        assert ready, "".join(self.lines) + (self.process.stderr.read() if self.process.stderr else "")
        self.url = ready[0].split()[2]

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C; the exit code and what it printed after the start."""
        self.process.send_signal(signal.SIGINT)
        try:
            out, err = self.process.communicate(timeout=STOP_DEADLINE_S)
        finally:
            self.process.kill()
        return self.process.returncode, out, err


def _needs_browser() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the web test drives Chromium through playwright-core)")
    if not CHROMIUM:
        pytest.skip("chromium is not installed: apt-get install chromium (scripts/setup.sh does, as root)")
    if not (NODE_MODULES / "playwright-core").is_dir():
        pytest.skip(f"playwright-core missing under {NODE_MODULES}: run scripts/setup.sh")
    probe = subprocess.run([str(HOST_PYTHON), "-c", "import gradio"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"gradio is not installed in {HOST_PYTHON}: pip install 'instantmesh-rpc[web]'")


@pytest.mark.browser
@pytest.mark.slow
def test_two_images_become_meshes_in_the_browser_and_a_cancel_keeps_nothing(tmp_path: Path) -> None:
    _needs_browser()
    server = Server(tmp_path)
    try:
        shots = tmp_path / "shots"
        shots.mkdir()
        run = subprocess.run(
            [
                "node",
                str(ROOT / "tests" / "host" / "faces" / "drive_web.js"),
                server.url,
                str(INPUTS / "mug.png"),
                str(INPUTS / "ball.png"),
                str(shots),
            ],  # fmt: skip
            env=dict(os.environ, NODE_PATH=str(NODE_MODULES), CHROMIUM=CHROMIUM),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        code, out, err = server.stop()
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)

    assert seen["external"] == [] and seen["errors"] == [], seen
    assert seen["banner"].startswith("⚠ MOCK BACKEND") and "mock (fake views and meshes" in seen["banner"], seen
    assert seen["states"] == [["mug", "done"], ["ball", "done"], ["mug-2", "cancelled"]], seen
    assert len(seen["downloads"]) == 3, seen  # GLB, OBJ and PLY of the first object
    assert seen["refused"] == "nothing started: diffusion steps: expected a whole number <= 1000", seen
    assert "mug.png" in seen["kept"], "a refused drop stays in the drop zone"
    assert seen["cancelled"].startswith("cancelled mug-2"), seen

    import numpy as np
    from PIL import Image

    for slot in range(2):
        pixels = np.asarray(Image.open(shots / f"viewer-{slot}.png").convert("RGB")).astype(float)
        assert pixels.std() > 10.0, f"3D view {slot} looks blank (std {pixels.std():.1f})"
        drawn = (pixels.min(axis=2) < 230).mean()
        assert drawn > 0.02, f"3D view {slot}: only {drawn:.1%} of its pixels are drawn"

    written = sorted(path.name for path in server.out.iterdir())
    assert written == sorted(
        f"{name}{suffix}" for name in ("mug", "ball") for suffix in (".glb", ".obj", ".ply", "_input.png", "_views.png")
    ), written  # nothing of the cancelled mug-2, no hidden staged input
    assert code == 0 and out.strip().endswith("the worker is shut down"), (code, out, err)
    if os.environ.get("INSTANTMESH_RPC_WEB_SCREENSHOT"):
        shutil.copyfile(shots / "page.png", os.environ["INSTANTMESH_RPC_WEB_SCREENSHOT"])
