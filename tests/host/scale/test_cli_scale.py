"""``python -m host batch --workers 2`` and ``--ray local`` as a person runs them, with a corrupt image."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import HOST_PYTHON, ROOT
from tests.faults.conftest import wait_gone

pytestmark = pytest.mark.pool

EXAMPLES = ROOT / "examples" / "inputs"


def batch(worker_python: Path, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if not HOST_PYTHON.exists():
        pytest.fail(f"{HOST_PYTHON} missing: run scripts/setup.sh")
    command = [
        str(HOST_PYTHON),
        "-m",
        "host",
        "batch",
        *map(str, args),
        "--python",
        str(worker_python),
        "--mock",
        "view_size=64",
        "--steps",
        "2",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def rows(stdout: str) -> dict[str, str]:
    table = stdout.split("object  status", 1)[1]
    statuses = {"ok", "failed", "skipped", "cancelled"}
    return {
        cells[0]: cells[1]
        for cells in (line.split() for line in table.splitlines()[1:])
        if len(cells) == 7 and cells[1] in statuses
    }


def test_batch_with_two_workers(worker_python: Path, inputs: Path, tmp_path: Path) -> None:
    """Two workers: the three good images become meshes, the corrupt one fails alone (exit 1), both workers
    are gone when the command returns."""
    done = batch(worker_python, inputs, "--out", tmp_path / "out", "--workers", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert rows(done.stdout) == {"ball": "ok", "box": "ok", "broken": "failed", "mug": "ok"}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.obj")) == ["ball.obj", "box.obj", "mug.obj"]
    pids = re.search(r"2 workers ready in .* pids (\d+) \(.*\), (\d+) \(", done.stdout)
    assert pids is not None, done.stdout
    for pid in pids.groups():
        assert wait_gone(int(pid), 5.0), f"worker {pid} outlived the batch"


def test_batch_refuses_workers_with_ray_and_zero_workers(worker_python: Path, inputs: Path, tmp_path: Path) -> None:
    """--workers with --ray and --workers 0 are refused with one clear line, nothing written."""
    both = batch(worker_python, inputs, "--out", tmp_path / "out", "--workers", "2", "--ray", "auto")
    assert both.returncode == 2 and "give --workers or --ray, not both" in both.stderr
    zero = batch(worker_python, inputs, "--out", tmp_path / "out", "--workers", "0")
    assert zero.returncode == 2 and "Expected `int` >= 1 - at `$.workers`" in zero.stderr
    assert not any((tmp_path / "out").glob("*.obj"))


def test_batch_on_a_local_ray_cluster(worker_python: Path, inputs: Path, tmp_path: Path) -> None:
    """--ray local: a Ray cluster on this machine, one CPU actor (no GPU here), the same table and exit 1."""
    done = batch(worker_python, inputs, "--out", tmp_path / "out", "--ray", "local", "--device", "cpu", timeout=140)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert rows(done.stdout) == {"ball": "ok", "box": "ok", "broken": "failed", "mug": "ok"}
    assert (tmp_path / "out" / "mug.obj").is_file()


def test_ctrl_c_during_a_pool_batch_stops_every_worker(worker_python: Path, inputs: Path, tmp_path: Path) -> None:
    """SIGINT once the workers run: exit 130 at once, the unfinished objects marked cancelled, no worker left."""
    import signal

    command = [
        str(HOST_PYTHON),
        "-m",
        "host",
        "batch",
        str(inputs),
        "--out",
        str(tmp_path / "out"),
        "--python",
        str(worker_python),
        "--mock",
        "view_size=64,step_delay=0.5",
        "--steps",
        "40",
        "--workers",
        "2",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    batch_process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert batch_process.stdout is not None
    seen = []
    for line in batch_process.stdout:  # the event: both workers are up and the objects are submitted
        seen.append(line)
        if line.startswith("model: "):
            break
    batch_process.send_signal(signal.SIGINT)
    rest = batch_process.stdout.read()
    assert batch_process.wait(30) == 130, "".join(seen) + rest
    statuses = rows("".join(seen) + rest)
    assert set(statuses) == {"ball", "box", "broken", "mug"} and "cancelled" in statuses.values()
    assert set(statuses.values()) <= {"cancelled", "ok", "failed"}
    for pid in re.findall(r"(\d+) \(default\)", "".join(seen)):
        assert wait_gone(int(pid), 5.0), f"worker {pid} outlived the batch"
