"""Debris: a killed host's staged inputs and shared-memory folders are removed by the next run (never a live host's), and a report that cannot be written, or may not replace a page, leaves nothing partial."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import HOST_PYTHON

from .conftest import ROOT, host_script_env, wait_gone

pytestmark = pytest.mark.faults

EXAMPLES = ROOT / "examples" / "inputs"
SLOW_MOCK = "step_delay=0.05"


def wait_for(found: Callable[[], list[Path]], what: str, timeout: float = 30.0) -> list[Path]:
    """Until ``found`` returns something (the file system's event this suite waits on)."""
    deadline = time.monotonic() + timeout
    while not (seen := found()):
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)
    return seen


def staged(out: Path, name: str) -> list[Path]:
    return sorted(out.glob(f".{name}_input.partial-*"))


def batch(worker_python: Path, photo: Path, out: Path, *args: str, mock: str = "step_delay=0") -> list[str]:
    return [
        str(HOST_PYTHON),
        "-m",
        "host",
        "batch",
        str(photo),
        "--out",
        str(out),
        "--python",
        str(worker_python),
        "--mock",
        mock,
        *args,
    ]


@pytest.fixture()
def hosts() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts host processes in their own sessions; kills whatever still runs after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(command: list[str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=host_script_env(),
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_killed_batch_hosts_staged_input_is_removed_by_the_next_run_and_a_live_hosts_is_kept(
    worker_python: Path, tmp_path: Path, hosts: Callable[..., subprocess.Popen[str]]
) -> None:
    """Two batch hosts share --out, each with a prepared input staged under its hidden name; one is SIGKILLed.
    The next batch there removes the killed host's staged input and keeps the live host's, which then finishes
    its object with it."""
    out = tmp_path / "out"
    live = hosts(batch(worker_python, EXAMPLES / "mug.png", out, "--steps", "250", mock=SLOW_MOCK))
    (kept,) = wait_for(lambda: staged(out, "mug"), "the live host's staged input")
    killed = hosts(batch(worker_python, EXAMPLES / "ball.png", out, "--steps", "400", mock=SLOW_MOCK))
    (left,) = wait_for(lambda: staged(out, "ball"), "the killed host's staged input")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert left.exists()

    done = subprocess.run(
        batch(worker_python, EXAMPLES / "box.png", out, "--steps", "1"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not left.exists(), "the killed host's staged input was not removed"
    assert live.poll() is None, "the live host finished too early for this test"
    assert kept.exists(), "a live host's staged input was removed"
    assert live.wait(60) == 0, live.stderr.read() if live.stderr else ""
    assert (out / "mug_input.png").is_file() and not staged(out, "mug")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


POOL_HOST = """
import sys, time
from host.scale.pool import WorkerPool
pool = WorkerPool(sys.argv[1], backend="mock", worker_args=["--mock", ""], split={"views": "cpu", "mesh": "cpu"})
pool.start()
print(pool.transfer_dir, flush=True)
time.sleep(120)
"""


def test_a_killed_pools_shared_memory_folder_is_removed_by_the_next_pool_and_a_live_pools_is_kept(
    worker_python: Path,
) -> None:
    """A split pool's host (views and meshes on two mock workers, the grid passing through a shared-memory folder)
    is SIGKILLed while a second pool's host runs: the next pool that starts removes the killed host's folder,
    keeps the live one's, and the killed host's workers exit."""

    def start() -> tuple[subprocess.Popen[str], Path]:
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(POOL_HOST), str(worker_python)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=host_script_env(),
            start_new_session=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line, process.stderr.read() if process.stderr else ""
        return process, Path(line)

    (killed, left), (live, kept) = start(), start()
    try:
        assert left.is_dir() and kept.is_dir() and left != kept
        (left / "grid.png").write_bytes(b"a grid in transit")
        workers = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(int(pid)) == killed.pid]
        killed.kill()
        killed.wait()
        assert left.is_dir()
        assert all(wait_gone(pid, 5.0) for pid in workers), "the killed host's workers outlived it"

        from host.scale.pool import WorkerPool

        pool = WorkerPool(
            str(worker_python), backend="mock", worker_args=["--mock", ""], split={"views": "cpu", "mesh": "cpu"}
        )
        with pool:
            assert not left.exists(), "the killed host's shared-memory folder was not removed"
            assert kept.is_dir(), "a live host's shared-memory folder was removed"
        assert kept.is_dir()
    finally:
        for process in (killed, live):
            if process.poll() is None:
                process.kill()
            process.wait()


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


FILE_SIZE_LIMIT = 400 * 1024
"""Bytes any one file may grow to (RLIMIT_FSIZE): small mock outputs fit, the report's viewer (about 900 KB) not."""


def test_a_report_the_disk_refuses_is_one_line_naming_the_file_with_nothing_partial(
    worker_python: Path, tmp_path: Path
) -> None:
    """The kernel refuses to let the report's viewer script grow past a file-size limit halfway through it (as a
    full disk would): the batch exits 1 with one line naming that file and no traceback; no partial file is
    left, and the meshes are made."""
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))

    done = subprocess.run(
        batch(worker_python, EXAMPLES / "mug.png", out, "--steps", "1", "--report", mock="view_size=64"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        preexec_fn=limit,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    viewer = out / "report" / "model-viewer-umd.min.js"
    assert done.stderr == f"error: the report was not written: {viewer}: File too large\n", done.stderr
    assert (out / "mug.obj").is_file() and not (out / "index.html").exists() and not viewer.exists()
    hidden = [p.name for folder in (out, out / "report") for p in folder.iterdir() if p.name.startswith(".")]
    assert hidden == [], f"partial files left: {hidden}"


def test_a_page_that_is_not_ours_is_kept_without_overwrite_and_our_own_is_replaced(
    worker_python: Path, tmp_path: Path
) -> None:
    """An index.html in --out that is not a report of ours: batch --report is refused at start (exit 2, one line
    naming it and --overwrite, no worker started) and the page is kept; with --overwrite it is replaced, and a
    later --report run replaces its own page without --overwrite."""
    out = tmp_path / "out"
    out.mkdir()
    page = out / "index.html"
    page.write_text("<html>the person's page</html>")
    command = batch(worker_python, EXAMPLES / "mug.png", out, "--steps", "1", "--report")
    refused = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: --report: {page} exists and is not a report of instantmesh-rpc; pass --overwrite to replace it\n"
    )
    assert "starting the worker" not in refused.stdout and page.read_text() == "<html>the person's page</html>"

    replaced = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    ours = page.read_text()
    assert "instantmesh-rpc report" in ours
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert again.returncode == 0 and "already done" in again.stdout, again.stdout + again.stderr
    assert page.stat().st_mtime_ns >= (out / "mug.obj").stat().st_mtime_ns and "mug" in page.read_text()
