"""``python -m host session`` on a real pseudo-terminal: typed paths, status, Ctrl-C, quit, no worker left."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HOST_PYTHON, MODELS_PYTHON, ROOT
from tests.host.cli.terminal import TerminalProgram, screen_text
from tests.host.cli.test_batch import EXAMPLES, worker_gone

pytestmark = pytest.mark.cli

PROMPT = r"instantmesh> "


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("mug.png", "ball.png", "box.png", "box_mask.png"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


@pytest.fixture()
def start_session(tmp_path: Path) -> Iterator:
    """Starts the session in a pty; kills it (and checks its worker is gone) after the test."""
    started: list[TerminalProgram] = []

    def start(*worker_options: str) -> TerminalProgram:
        if not HOST_PYTHON.exists():
            pytest.fail(f"{HOST_PYTHON} missing: run scripts/setup.sh")
        argv = [str(HOST_PYTHON), "-m", "host", "session", "--out", str(tmp_path / "out"), *worker_options]
        env = dict(os.environ, TERM="dumb", PYTHONUNBUFFERED="1")
        program = TerminalProgram(argv, env=env, cwd=str(ROOT))
        started.append(program)
        return program

    yield start
    for program in started:
        program.close()


def worker_pid(program: TerminalProgram) -> int:
    program.line("status")
    pid = int(program.expect(r"worker +pid (\d+)").group(1))
    program.expect(PROMPT)
    return pid


def assert_worker_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while not worker_gone(pid):
        assert time.monotonic() < deadline, f"worker {pid} is still running after the session ended"
        time.sleep(0.05)


def make(program: TerminalProgram, path: Path, name: str, out: Path, timeout: float = 30) -> None:
    program.line(str(path))
    program.expect(rf"views +\d+\.\d s -> .*{name}_views.png", timeout)
    program.expect(rf"mesh +\d+\.\d s -> .*{name}\.obj \(\d+ vertices, \d+ faces\)", timeout)
    program.expect(rf"sheet +-> .*{name}_sheet.png", timeout)
    program.expect(PROMPT, timeout)
    assert (out / f"{name}.obj").stat().st_size > 0 and (out / f"{name}_sheet.png").exists()


def test_mock_session_two_objects_status_ctrl_c_cancels_then_quit(
    worker_python: Path, inputs: Path, tmp_path: Path, start_session
) -> None:
    program = start_session("--python", str(worker_python), "--mock", "step_delay=0.05", "--steps", "4")
    program.expect(r"MODEL +mock")
    program.expect(PROMPT)
    out = tmp_path / "out"
    make(program, inputs / "mug.png", "mug", out)
    assert "cold start, once per session" in program.output
    make(program, inputs / "ball.png", "ball", out)
    pid = worker_pid(program)
    assert re.search(r"objects +2 done, 0 failed, 0 cancelled", program.output)

    program.line("steps 400")
    program.expect(PROMPT)
    program.line(str(inputs / "box.png"))
    program.expect(r"views +\[#*\.+\] \d+/400")
    program.send("\x03")
    program.expect(r"cancelled -- the worker stays warm")
    program.expect(PROMPT, 10)
    assert worker_pid(program) == pid, "the worker was not restarted by Ctrl-C"
    assert re.search(r"busy: no", program.output[program.output.rfind("status") :])
    program.line("steps 3")
    make(program, inputs / "box.png", "box", out)
    assert not list(out.glob("box-2*")), "the cancelled object left outputs behind"

    program.line("quit")
    assert program.wait(20) == 0
    assert "worker stopped (exit code 0); 3 object(s) done" in program.output
    assert_worker_gone(pid)


def test_ctrl_c_at_the_prompt_and_a_double_ctrl_c_both_shut_down(
    worker_python: Path, inputs: Path, start_session
) -> None:
    program = start_session("--python", str(worker_python), "--mock", "step_delay=0.05", "--steps", "400")
    program.expect(PROMPT)
    pid = worker_pid(program)
    program.ctrl_c_at_prompt("Ctrl-C at the prompt: quitting")
    assert program.wait(20) == 0
    assert_worker_gone(pid)

    program = start_session("--python", str(worker_python), "--mock", "step_delay=0.05", "--steps", "400")
    program.expect(PROMPT)
    pid = worker_pid(program)
    program.line(str(inputs / "mug.png"))
    program.expect(r"views +\[#*\.+\] \d+/400")
    program.send("\x03")
    program.expect("cancelled")
    # Within the double-press window it says "second Ctrl-C"; on a loaded machine the prompt may already be back.
    program.ctrl_c_at_prompt(r"(second Ctrl-C|Ctrl-C at the prompt): quitting")
    assert program.wait(20) == 0
    assert "worker stopped (exit code 0)" in program.output
    assert_worker_gone(pid)


def test_commands_validate_and_unknown_paths_are_named(worker_python: Path, start_session) -> None:
    program = start_session("--python", str(worker_python), "--backend", "mock")
    program.expect(PROMPT)
    for line, answer in [
        ("steps zero", r"usage: steps N"),
        ("steps 0", r"steps must be between 1 and 1000"),
        ("format stl", r"usage: format obj\|glb\|ply"),
        ("format glb", r"format = glb"),
        ("no/such/file.png", r"no/such/file.png: no such file or folder \(type help"),
        ("help", r"Ctrl-C while an object runs cancels it"),
        ("unload", r"unloaded: nothing was loaded"),
        ("load", r"load +\d+\.\d s \(views"),
    ]:
        program.line(line)
        program.expect(answer)
        program.expect(PROMPT)
    pid = worker_pid(program)
    program.send("\x04")
    assert program.wait(20) == 0
    assert_worker_gone(pid)


@pytest.mark.models
def test_tiny_session_labels_the_model_makes_two_meshes_and_cancels(
    inputs: Path, tmp_path: Path, tiny_cache: Path, start_session
) -> None:
    program = start_session("--python", str(MODELS_PYTHON), "--preset", "tiny", "--steps", "2")
    program.expect(r"MODEL +tiny \(random weights, NOT the official models", 120)
    program.expect(r"python +3\.\d+\.\d+, torch ")
    program.expect(PROMPT)
    out = tmp_path / "out"
    make(program, inputs / "mug.png", "mug", out, timeout=90)
    assert re.search(r"load +\d+\.\d s \(views \d+\.\d s, mesh \d+\.\d s\) -- cold start", program.output)
    make(program, inputs / "box.png", "box", out, timeout=60)
    pid = worker_pid(program)
    assert re.search(r"loaded +views, mesh", program.output)
    assert re.search(r"objects +2 done", program.output)

    program.line("steps 200")
    program.expect(PROMPT)
    program.line(str(inputs / "ball.png"))
    program.expect(r"views +\[#*\.+\] \d+/200", 30)
    program.send("\x03")
    program.expect("cancelled -- the worker stays warm", 10)
    program.expect(PROMPT, 15)
    assert worker_pid(program) == pid
    program.line("quit")
    assert program.wait(30) == 0
    assert_worker_gone(pid)
    screen = screen_text(program.output)
    assert "views [##############################] 2/2" in screen


def test_ctrl_c_in_a_folder_names_the_skipped_objects_and_leaves_no_debris(
    worker_python: Path, inputs: Path, tmp_path: Path, start_session
) -> None:
    program = start_session("--python", str(worker_python), "--mock", "step_delay=0.05", "--steps", "400")
    program.expect(PROMPT)
    program.line(str(inputs))  # ball, box, mug (sorted)
    program.expect(r"ball \(1/3\)")
    program.expect(r"views +\[#*\.+\] \d+/400")
    program.send("\x03")
    program.expect("cancelled -- the worker stays warm", 10)
    program.expect(r"skipped, not started: box, mug", 10)
    program.expect(PROMPT, 15)
    program.line("quit")
    assert program.wait(20) == 0
    out = tmp_path / "out"
    leftovers = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert leftovers == [], f"the cancelled folder left {leftovers}"


def test_a_second_ctrl_c_while_cancelling_quits_and_leaves_nothing_of_the_object(
    worker_python: Path, inputs: Path, tmp_path: Path, start_session
) -> None:
    """Ctrl-C while the mesh is made (the views grid is written), then Ctrl-C again while the session waits for the
    worker to stop (it never does: the mock hangs in reconstruct): the session quits, and no file of the cancelled
    object remains."""
    program = start_session(
        "--python", str(worker_python), "--mock", "step_delay=0.01,hang_on=reconstruct", "--steps", "2"
    )
    pid = int(program.expect(r"worker +pid (\d+)").group(1))
    program.expect(PROMPT)
    out = tmp_path / "out"
    program.line(str(inputs / "mug.png"))
    program.expect(r"views +\[#+\] 2/2")
    deadline = time.monotonic() + 10
    while not (out / "mug_views.png").exists():  # the worker writes the grid, then replies; the mesh comes next
        assert time.monotonic() < deadline, "the views grid was never written"
        time.sleep(0.02)
    program.send("\x03")
    program.expect("cancelled -- the worker stays warm", 10)
    program.send("\x03")
    program.expect("second Ctrl-C: quitting", 10)
    assert program.wait(30) == 0
    assert_worker_gone(pid)
    assert sorted(p.name for p in out.iterdir()) == [], "the cancelled object left files behind"
