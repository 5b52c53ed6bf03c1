"""The worker dies: SIGKILL mid-request, during load, between requests; or it cannot start at all."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from host.worker.client import WorkerClient
from host.worker.errors import WorkerCrashed, WorkerStartError
from host.worker.process import WorkerCommand
from rpcworker.wire.errors import HandleExpired
from rpcworker.wire.messages import GenerateViewsParams, ImagePath, ReconstructParams, ViewsHandle

from .conftest import wait_exited

pytestmark = pytest.mark.faults


def views_params(image: Path, **kw) -> GenerateViewsParams:
    return GenerateViewsParams(ImagePath(str(image)), **kw)


def test_sigkill_mid_request_fails_fast_with_exit_code_and_stderr(mock_client, object_png: Path) -> None:
    """SIGKILL during generate_views: the waiting call raises WorkerCrashed long before the request could
    have ended (a generous deadline), carrying exit code -9 and the worker's last stderr lines; without
    auto_restart later calls keep raising it."""
    client = mock_client("step_delay=0.05,noisy=1")
    stepping = threading.Event()
    pending = client.request(
        "generate_views",
        views_params(object_png, num_inference_steps=400),
        on_progress=lambda p: stepping.set() if p.stage == "diffusion" else None,
    )
    assert stepping.wait(30)
    killed_at = time.monotonic()
    os.kill(client.process.pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed) as crash:
        pending.result(10)
    assert time.monotonic() - killed_at < 10.0, "400 steps take 20 s: the crash must be reported at once"
    assert crash.value.exit_code == -signal.SIGKILL
    assert "mock print" in crash.value.stderr_tail
    with pytest.raises(WorkerCrashed):
        client.ping()


def test_sigkill_during_load_then_restart_loads_again(mock_client) -> None:
    """SIGKILL while `load` runs (mock load_delay): the load fails fast with WorkerCrashed; with
    auto_restart the next load starts a fresh worker and succeeds."""
    client = mock_client("load_delay=5", auto_restart=True)
    first = client.process.pid
    loading = threading.Event()
    pending = client.request("load", None, on_progress=lambda p: loading.set())
    assert loading.wait(30)
    assert client.status().busy == "load"
    os.kill(first, signal.SIGKILL)
    with pytest.raises(WorkerCrashed):
        pending.result(4.0)  # the load takes 5 s: a crash reported at once beats it
    assert client.ping().pong and client.process.pid != first and client.generation == 2
    assert client.status().loaded == []


def test_sigkill_between_requests_then_auto_restart(mock_client, object_png: Path) -> None:
    """SIGKILL of an idle worker: the next call starts a new worker (auto_restart), and handles from the
    dead worker are refused with handle_expired naming the restart."""
    client = mock_client(auto_restart=True)
    views = client.generate_views(views_params(object_png, num_inference_steps=1))
    first_pid = client.process.pid
    os.kill(first_pid, signal.SIGKILL)
    assert wait_exited(client.process, 2.0)
    assert client.ping().pong
    assert client.process.pid != first_pid and client.generation == 2
    with pytest.raises(HandleExpired, match="another worker"):
        client.reconstruct(ReconstructParams(ViewsHandle(views.handle), "/tmp/never.obj"))


def test_sigkill_between_requests_without_auto_restart_is_reported(mock_client) -> None:
    """Without auto_restart, the first call after an idle worker died raises WorkerCrashed (exit -9) at once."""
    client = mock_client()
    os.kill(client.process.pid, signal.SIGKILL)
    assert wait_exited(client.process, 2.0)
    start = time.monotonic()
    with pytest.raises(WorkerCrashed) as crash:
        client.ping(timeout=10)
    assert time.monotonic() - start < 1.5 and crash.value.exit_code == -signal.SIGKILL


def _env_without(tmp_path: Path, worker_python: Path, keep: tuple[str, ...]) -> Path:
    """A Python 3.10 venv with none of the worker's packages except those named in ``keep``."""
    venv = tmp_path / "bad-env"
    subprocess.run([str(worker_python), "-m", "venv", "--without-pip", str(venv)], check=True)
    if keep:
        import glob

        source = Path(
            subprocess.check_output(
                [
                    str(worker_python),
                    "-c",
                    "import msgspec, os; print(os.path.dirname(os.path.dirname(msgspec.__file__)))",
                ],
                text=True,
            ).strip()
        )
        shelf = tmp_path / "shelf"
        shelf.mkdir()
        for name in keep:
            for path in glob.glob(str(source / f"{name}*")):
                os.symlink(path, shelf / os.path.basename(path))
        (site,) = glob.glob(str(venv / "lib" / "python3*" / "site-packages"))
        Path(site, "shelf.pth").write_text(str(shelf) + "\n")
    return venv


@pytest.mark.parametrize(
    "keep, missing, exit_code",
    [((), "msgspec", 1), (("msgspec",), "numpy", 2)],
    ids=["no-msgspec", "no-numpy"],
)
def test_missing_package_is_named_in_the_start_error(
    tmp_path: Path, worker_python: Path, keep: tuple[str, ...], missing: str, exit_code: int
) -> None:
    """A worker environment without a needed package: the worker exits non-zero at start and the host's
    WorkerStartError names the missing package (taken from the worker's stderr) and the exit code."""
    venv = _env_without(tmp_path, worker_python, keep)
    client = WorkerClient(WorkerCommand.venv(venv), ["--backend", "mock"], startup_timeout=30)
    start = time.monotonic()
    with pytest.raises(WorkerStartError) as info:
        client.start()
    assert time.monotonic() - start < 10
    assert info.value.exit_code == exit_code
    assert f"lacks the Python package '{missing}'" in str(info.value)
    assert f"No module named '{missing}'" in info.value.stderr_tail


def test_start_failures_name_the_cause(tmp_path: Path, worker_python: Path) -> None:
    """No interpreter at the given path, the real backend without torch, and a bad worker option each
    fail start with WorkerStartError naming the cause (and the exit code when the worker ran)."""
    with pytest.raises(WorkerStartError, match="does not exist"):
        WorkerClient(WorkerCommand.python(tmp_path / "no-python"), []).start()
    with pytest.raises(WorkerStartError, match="torch") as info:
        WorkerClient(
            WorkerCommand.python(worker_python), ["--backend", "instantmesh", "--preset", "tiny"], startup_timeout=30
        ).start()
    assert info.value.exit_code == 2
    with pytest.raises(WorkerStartError, match="unknown mock option 'bogus'") as info:
        WorkerClient(
            WorkerCommand.python(worker_python), ["--backend", "mock", "--mock", "bogus=1"], startup_timeout=30
        ).start()
    assert info.value.exit_code == 2
