"""Arguments and outputs that cannot work are refused at once in one line naming what is wrong: a pool's counts
and devices, a worker's stray output before its handshake, a folder or an unreadable file where a mesh goes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from host.scale.pool import WorkerPool
from host.worker.client import WorkerClient
from host.worker.errors import WorkerStartError
from host.worker.process import WorkerCommand
from tests.conftest import HOST_PYTHON, ROOT

pytestmark = pytest.mark.faults

STARTUP_TIMEOUT_S = 60.0
"""Far longer than a refusal may take: a start that fails 'at once' fails well inside it."""
AT_ONCE_S = 15.0
EXAMPLES = ROOT / "examples" / "inputs"
NO_FILE_PERMISSIONS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
"""Root reads any file: without these two capabilities it obeys a file's mode like anyone else."""


def stray_client(worker_python: Path, stray: bytes) -> WorkerClient:
    """The garbage worker, which writes ``stray`` to its stdout before anything else."""
    command = WorkerCommand.python(worker_python)
    command.module = "tests.faults.garbage_worker"
    command.worker_code = str(ROOT)  # the checkout on the worker's path: the staged code holds no tests
    return WorkerClient(command, ["--mode", "none", "--stray", stray.hex()], startup_timeout=STARTUP_TIMEOUT_S)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"workers": 2.5}, "got `float` - at `$.workers`"),
        ({"workers": 0}, "`int` >= 1 - at `$.workers`"),
        ({"workers": -1}, "`int` >= 1 - at `$.workers`"),
        ({"devices": []}, "length >= 1 - at `$.devices`"),
        ({"split": {"views": [], "mesh": "cpu"}}, "length >= 1 - at `$.split.views`"),
        ({"devices": ["gpu0"]}, "at `$.devices[0]` (a device is cpu, cuda or cuda:N)"),
        ({"devices": ["cpu", "cuda:7"]}, "device cuda:7 does not exist: 1 GPU(s) visible (0)"),
    ],
)
def test_a_pool_refuses_a_bad_count_or_device_before_any_worker_starts(
    arguments: dict, named: str, worker_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workers=2.5, 0 or negative, an empty devices list or split side, a malformed device and a GPU this
    machine lacks: WorkerPool's constructor raises ValueError, one line naming the argument or the device."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ValueError) as refused:
        WorkerPool(str(worker_python), backend="mock", **arguments)
    message = str(refused.value)
    assert named in message and "\n" not in message, message


def test_batch_refuses_a_fractional_worker_count_in_one_line(worker_python: Path, tmp_path: Path) -> None:
    """``batch --workers 2.5`` exits 2 with one line naming --workers, before any worker starts."""
    done = batch(worker_python, tmp_path, "--workers", "2.5")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("argument --workers: expected a whole number, got '2.5'")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("stray", "quoted"),
    [
        (b"abc", "b'abc'"),
        (b"\x1b[31mred\xff\x00", "b'\\x1b[31mred\\xff\\x00'"),
        (b"A" * 500, "b'" + "A" * 60 + "'..."),
    ],
    ids=["text", "control-and-invalid-bytes", "long"],
)
def test_stray_bytes_without_a_line_end_before_the_handshake_fail_the_start_at_once(
    worker_python: Path, stray: bytes, quoted: str
) -> None:
    """The worker writes bytes that start no frame and no newline, then waits: the start fails within seconds
    (not the 60 s startup timeout) with WorkerStartError whose first line quotes the bytes escaped and cut to
    60, and the worker is gone."""
    client = stray_client(worker_python, stray)
    began = time.monotonic()
    try:
        with pytest.raises(WorkerStartError) as refused:
            client.start()
    finally:
        client.close()
    assert time.monotonic() - began < AT_ONCE_S
    first = str(refused.value).splitlines()[0]
    assert f"the worker wrote {quoted} to its stdout before its first frame" in first, first
    assert "\x1b" not in first and "\x00" not in first


def test_a_whole_stray_line_before_the_handshake_is_skipped(worker_python: Path) -> None:
    """A banner line (with its newline) before the first frame is a bad frame, skipped and counted as before:
    the worker starts and answers."""
    client = stray_client(worker_python, b"Welcome to the cluster!\n")
    try:
        client.start()
        assert client.ping(timeout=30).pong
        assert client._session is not None and client._session.bad_frames == 1
    finally:
        client.close()


def batch(
    worker_python: Path, tmp_path: Path, *args: str, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m host batch`` over mug (alpha) and box (with its mask), into ``tmp_path/out``."""
    inputs = tmp_path / "in"
    if not inputs.exists():
        inputs.mkdir()
        for name in ("mug.png", "box.png", "box_mask.png"):
            shutil.copy(EXAMPLES / name, inputs / name)
    command = [*(prefix or []), str(HOST_PYTHON), "-m", "host", "batch", str(inputs), "--out", str(tmp_path / "out")]
    command += [*args, "--python", str(worker_python), "--mock", "step_delay=0", "--steps", "2"]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=ROOT)


def failed_line(stderr: str, name: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(f"  {name} (")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_directory_where_a_mesh_goes_fails_that_object_alone(worker_python: Path, tmp_path: Path) -> None:
    """``OUT/mug.obj`` is a folder: mug fails with one line naming the path ('is a directory'), box is made,
    the folder is left as it was and the exit status is 1 (it used to count as done and be skipped)."""
    (tmp_path / "out" / "mug.obj").mkdir(parents=True)
    (tmp_path / "out" / "mug.obj" / "keep.txt").write_text("mine")
    done = batch(worker_python, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{tmp_path / 'out' / 'mug.obj'} is a directory" in failed_line(done.stderr, "mug")
    assert (tmp_path / "out" / "box.obj").is_file()
    assert (tmp_path / "out" / "mug.obj" / "keep.txt").read_text() == "mine"
    assert "Traceback" not in done.stderr


def test_an_unreadable_mesh_of_a_done_object_fails_that_object_alone(worker_python: Path, tmp_path: Path) -> None:
    """An earlier run's ``OUT/mug.obj`` that cannot be read (mode 000): with --report, mug fails with one
    line (the path, 'Permission denied', --overwrite), box is made and the report is written."""
    prefix = NO_FILE_PERMISSIONS if os.geteuid() == 0 else []
    if prefix and shutil.which(prefix[0]) is None:
        pytest.skip("running as root without setpriv: no file is unreadable here")
    mesh = tmp_path / "out" / "mug.obj"
    mesh.parent.mkdir()
    mesh.write_text("v 0 0 0\n")
    mesh.chmod(0)
    done = batch(worker_python, tmp_path, "--report", prefix=prefix)
    assert done.returncode == 1, done.stdout + done.stderr
    line = failed_line(done.stderr, "mug")
    assert f"{mesh} exists but cannot be read (Permission denied); --overwrite redoes" in line, line
    assert (tmp_path / "out" / "box.obj").is_file() and (tmp_path / "out" / "index.html").is_file()
    assert "Traceback" not in done.stderr


def test_a_done_mesh_the_report_cannot_load_is_a_note_on_its_card(worker_python: Path, tmp_path: Path) -> None:
    """An earlier run's ``OUT/mug.obj`` that reads but does not load as a mesh (a face on a missing vertex):
    mug is skipped, the report is written with a note on mug's card, and stderr has one 'note:' line for it
    (it used to end the batch with a traceback)."""
    mesh = tmp_path / "out" / "mug.obj"
    mesh.parent.mkdir()
    mesh.write_text("v 1 2\nf 1 2 3\n")
    done = batch(worker_python, tmp_path, "--report")
    assert done.returncode == 0, done.stdout + done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and f"{mesh}: not shown in the report, it could not be read" in notes[0], done.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert "not shown in the report" in page and "Traceback" not in done.stderr
