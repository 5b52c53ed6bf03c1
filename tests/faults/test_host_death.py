"""The host dies or is interrupted: the worker never outlives it, and Ctrl-C never kills it mid-request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rpcworker.wire.messages import GenerateViewsParams, ImagePath

from .conftest import ROOT, host_script_env, process_alive, wait_gone

pytestmark = pytest.mark.faults

PRELUDE = """
import os, sys, time, subprocess
from host.worker.client import WorkerClient
from host.worker.process import WorkerCommand
from rpcworker.wire.errors import Cancelled
from rpcworker.wire.messages import GenerateViewsParams, ImagePath
worker_python, image, mock = sys.argv[1], sys.argv[2], sys.argv[3]
c = WorkerClient(WorkerCommand.python(worker_python), ["--backend", "mock", "--mock", mock], startup_timeout=30)
c.start()
def say(*words):
    print(*words, flush=True)
say("worker", c.process.pid)
"""


class HostScript:
    """A host program in its own session (so a process-group signal reaches it, as Ctrl-C would)."""

    def __init__(self, body: str, worker_python: Path, image: Path, mock: str = "step_delay=0.05") -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(body), str(worker_python), str(image), mock],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=host_script_env(),
            start_new_session=True,
            # SIGINT as at a person's terminal (a background job would pass it on ignored): Ctrl-C interrupts.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.worker_pid = int(self.expect("worker")[1])

    def expect(self, word: str, timeout: float = 20.0) -> list[str]:
        """Reads stdout lines until one starts with ``word``; fails with the host's stderr otherwise."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if not line:
                break
            if line.split()[:1] == [word]:
                return line.split()
        self.popen.kill()
        pytest.fail(f"host never said {word!r}; stderr:\n{self.popen.stderr.read() if self.popen.stderr else ''}")

    def finish(self, timeout: float = 15.0) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()


BUSY = """
c.request("generate_views", GenerateViewsParams(ImagePath(image), num_inference_steps=1000))
say("busy")
time.sleep(60)
"""


@pytest.mark.parametrize("state", ["mid-request", "idle"])
def test_worker_exits_within_2s_when_the_host_is_killed(worker_python: Path, object_png: Path, state: str) -> None:
    """SIGKILL of the host (busy with a request, or idle): the worker sees EOF and exits within 2 s."""
    body = BUSY if state == "mid-request" else 'say("busy")\ntime.sleep(60)\n'
    host = HostScript(body, worker_python, object_png)
    host.expect("busy")
    time.sleep(0.2)
    assert process_alive(host.worker_pid)
    host.popen.kill()
    host.finish()
    assert wait_gone(host.worker_pid, 2.0), "worker outlived its host by more than 2 s"


def test_worker_exits_when_the_host_dies_but_its_stdin_is_still_held(worker_python: Path, object_png: Path) -> None:
    """The host dies while another process still holds the worker's stdin (no EOF comes): the worker's
    parent watchdog notices its parent changed and exits within 2 s."""
    body = """
    fd = c.process.stdin.fileno()
    holder = subprocess.Popen(["sleep", "60"], pass_fds=(fd,), start_new_session=True)
    say("holder", holder.pid)
    time.sleep(60)
    """
    host = HostScript(body, worker_python, object_png)
    holder = int(host.expect("holder")[1])
    try:
        host.popen.kill()
        host.finish()
        assert wait_gone(host.worker_pid, 2.0), "worker outlived its host although a holder kept its stdin open"
    finally:
        os.kill(holder, signal.SIGKILL)


def test_ctrl_c_handled_by_the_host_does_not_touch_the_worker(worker_python: Path, object_png: Path) -> None:
    """SIGINT to the host's process group (Ctrl-C in its terminal) while a request runs: the worker is in
    its own session, so it is not signalled; the host catches the interrupt and the request completes."""
    body = """
    pending = c.request("generate_views", GenerateViewsParams(ImagePath(image), num_inference_steps=30))
    say("busy")
    try:
        time.sleep(30)
    except KeyboardInterrupt:
        say("interrupted")
    say("done", pending.result(20).handle)
    c.close()
    """
    host = HostScript(body, worker_python, object_png)
    host.expect("busy")
    assert os.getpgid(host.worker_pid) != os.getpgid(host.popen.pid), "worker must have its own process group"
    time.sleep(0.2)
    os.killpg(host.popen.pid, signal.SIGINT)
    host.expect("interrupted")
    assert process_alive(host.worker_pid)
    assert host.expect("done")[1].startswith("views-")
    assert host.finish() == 0
    assert wait_gone(host.worker_pid, 2.0)


def test_ctrl_c_while_waiting_cancels_only_that_request(worker_python: Path, object_png: Path) -> None:
    """SIGINT while the host waits on a result: the API cancels that request (the worker answers
    `cancelled`) and re-raises KeyboardInterrupt; the same worker then serves a ping."""
    body = """
    pending = c.request("generate_views", GenerateViewsParams(ImagePath(image), num_inference_steps=1000))
    say("busy")
    try:
        pending.result()
    except KeyboardInterrupt:
        say("interrupted")
    try:
        pending.result(10)
    except Cancelled:
        say("cancelled")
    say("pong", c.ping().pong, c.process.pid)
    c.close()
    """
    host = HostScript(body, worker_python, object_png)
    host.expect("busy")
    time.sleep(0.3)
    os.killpg(host.popen.pid, signal.SIGINT)
    host.expect("interrupted")
    host.expect("cancelled")
    assert host.expect("pong")[1:] == ["True", str(host.worker_pid)]
    assert host.finish() == 0
    assert wait_gone(host.worker_pid, 2.0)


def test_sigint_sent_to_the_worker_itself_is_ignored(mock_client, object_png: Path) -> None:
    """SIGINT delivered to the worker's own process group (e.g. a stray Ctrl-C) does not stop it or the
    request in flight; only shutdown/EOF ends it."""
    client = mock_client("step_delay=0.02")
    pending = client.request("generate_views", GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=30))
    time.sleep(0.2)
    os.killpg(client.process.pid, signal.SIGINT)
    assert pending.result(20).handle
    assert client.process.alive and client.ping().pong
