"""Starting, watching and stopping the worker process; nothing here knows about messages.

The worker runs in its own session (process group), so Ctrl-C in the host's terminal reaches the host only;
the host decides whether that cancels a request. Its stderr is drained continuously into a bounded buffer
whose last lines are attached to every crash error.
"""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .environment import WORKER_CODE_INSTALLED, find_worker_environment, worker_process_environment


@dataclass
class WorkerCommand:
    """How to run a Python of the worker's environment. ``prefix`` is everything before ``-m rpcworker``."""

    prefix: list[str]
    env: dict[str, str] = field(default_factory=dict)
    add_project_to_path: bool = True
    """False means ``worker_code="installed"`` (kept for callers of the first releases)."""
    module: str = "rpcworker"
    worker_code: str | None = None
    """How the worker's code reaches its environment: ``host`` (default), ``installed`` or a directory (host.environment)."""

    @classmethod
    def python(cls, interpreter: str | os.PathLike[str]) -> WorkerCommand:
        return cls([os.fspath(interpreter)])

    @classmethod
    def venv(cls, directory: str | os.PathLike[str]) -> WorkerCommand:
        bindir = "Scripts" if os.name == "nt" else "bin"
        return cls([os.path.join(os.fspath(directory), bindir, "python")])

    @classmethod
    def conda(cls, env_name: str, conda: str = "conda") -> WorkerCommand:
        """``conda run`` without output capture, so stdin/stdout stream through."""
        return cls([conda, "run", "--no-capture-output", "-n", env_name, "python"])

    @classmethod
    def parse(cls, text: str) -> WorkerCommand:
        """From a string: a venv directory, a python path, ``conda:ENV``, or a shell-quoted command prefix."""
        if text.startswith("conda:"):
            return cls.conda(text.split(":", 1)[1])
        if os.path.isdir(text):
            return cls.venv(text)
        return cls(shlex.split(text))

    @classmethod
    def default(cls) -> WorkerCommand:
        """INSTANTMESH_RPC_PYTHON, the config file, or ./.venvs/models (host.environment.find_worker_environment)."""
        choice = find_worker_environment()
        command = cls.parse(choice.spec)
        command.worker_code = choice.worker_code
        return command

    def argv(self, worker_args: Sequence[str]) -> list[str]:
        return [*self.prefix, "-u", "-m", self.module, *worker_args]

    def environment(self) -> dict[str, str]:
        """Never the host's own Python paths: see host.environment for the isolation rule."""
        mode = self.worker_code if self.add_project_to_path else WORKER_CODE_INSTALLED
        return worker_process_environment(self.env, mode)


class WorkerProcess:
    """One running worker: its pipes, its stderr buffer and its exit."""

    def __init__(
        self,
        command: WorkerCommand,
        worker_args: Sequence[str] = (),
        *,
        stderr_lines: int = 200,
        on_stderr: Callable[[str], None] | None = None,
    ) -> None:
        self.command = command
        self.worker_args = list(worker_args)
        self._stderr = collections.deque(maxlen=stderr_lines)
        self._stderr_lock = threading.Lock()
        self._on_stderr = on_stderr
        self.kill_reason: str | None = None
        """Why the host killed this worker, when it did (shown in the crash error)."""
        argv = command.argv(self.worker_args)
        executable = argv[0]
        if os.sep not in executable and shutil.which(executable) is None:
            raise FileNotFoundError(f"worker interpreter {executable!r} not found on PATH")
        if os.sep in executable and not os.path.exists(executable):
            raise FileNotFoundError(
                f"worker interpreter {executable} does not exist; run scripts/setup.sh or set INSTANTMESH_RPC_PYTHON"
            )
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=1024 * 1024,
            env=command.environment(),
            start_new_session=True,
            close_fds=True,
        )
        assert self.popen.stdin and self.popen.stdout and self.popen.stderr
        self.stdin = self.popen.stdin
        self.stdout = self.popen.stdout
        self._drain = threading.Thread(target=self._drain_stderr, name=f"worker-{self.pid}-stderr", daemon=True)
        self._drain.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        """Asks the kernel without reaping: Popen.poll() answers "running" while another thread waits on it."""
        if self.popen.returncode is not None:
            return False
        try:
            exited = os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # already reaped by a concurrent wait
            return False
        return exited is None

    def _drain_stderr(self) -> None:
        stream = self.popen.stderr
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._stderr_lock:
                self._stderr.append(line)
            if self._on_stderr is not None:
                self._on_stderr(line)
        stream.close()

    def stderr_tail(self, lines: int = 40) -> str:
        with self._stderr_lock:
            return "\n".join(list(self._stderr)[-lines:])

    def wait_exit(self, timeout: float) -> int | None:
        """Waits for the exit and for stderr to be drained, so a crash report carries the last lines."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._drain.join(timeout=1.0)
        return code

    def stop(self, timeout: float = 5.0) -> int | None:
        """Closes stdin (the worker exits at EOF), then terminates, then kills. Returns the exit code."""
        try:
            self.stdin.close()
        except OSError:
            pass
        code = self.wait_exit(timeout)
        if code is None:
            self.signal(signal.SIGTERM)
            code = self.wait_exit(2.0)
        if code is None:
            self.kill()
            code = self.wait_exit(5.0)
        self.stdout.close()
        return code

    def signal(self, signum: int) -> None:
        if self.alive:
            try:
                os.killpg(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self, reason: str | None = None) -> None:
        if reason is not None and self.alive:
            self.kill_reason = reason
        self.signal(signal.SIGKILL)

