"""Starting, watching and stopping the worker process; nothing here knows about messages.

The worker runs in its own session (process group), so Ctrl-C in the host's terminal reaches the host only;
the host decides whether that cancels a request. Its stderr is drained continuously into a bounded buffer
whose last lines are attached to every crash error.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .environment import (
    WORKER_CODE_INSTALLED,
    EnvironmentProblem,
    find_worker_environment,
    worker_process_environment,
    worker_start_directory,
)

log = logging.getLogger("host.worker.process")

STDERR_LINES_KEPT = 200
"""Lines of the worker's stderr kept for crash reports."""
STDERR_LINE_CHARS = 2000
"""A longer stderr line is kept as its first characters plus a note of its length."""
STDERR_TAIL_CHARS = 8000
"""Longest stderr tail quoted in an error message."""
STDIN_CLOSE_WAIT_S = 5.0
"""Shutdown ladder: how long the worker gets to exit after EOF on its stdin..."""
TERMINATE_WAIT_S = 2.0
"""... then after SIGTERM to its process group, before SIGKILL."""
KILL_WAIT_S = 5.0
"""How long to wait for the kernel to report a SIGKILLed worker gone."""
DRAIN_JOIN_S = 1.0
"""How long an exit report waits for the last stderr lines to be drained."""


@dataclass
class WorkerCommand:
    """How to run a Python of the worker's environment. ``prefix`` is everything before ``-m rpcworker``."""

    prefix: list[str]
    env: dict[str, str] = field(default_factory=dict)
    add_project_to_path: bool = True
    """False means ``worker_code="installed"`` (kept for callers of the first releases)."""
    module: str = "rpcworker"
    worker_code: str | None = None
    """How the worker's code reaches its environment: ``host`` (default), ``installed`` or a directory (host.worker.environment)."""
    origin: str = "the python argument"
    """Where the command came from (an argument, INSTANTMESH_RPC_PYTHON, a config file), named in errors."""

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
        try:
            words = shlex.split(text)
        except ValueError as exc:  # an unbalanced quote
            raise EnvironmentProblem(f"the worker command {text!r} cannot be read: {str(exc).lower()}") from None
        if not words:
            raise EnvironmentProblem("the worker command is empty")
        return cls(words)

    @classmethod
    def default(cls) -> WorkerCommand:
        """INSTANTMESH_RPC_PYTHON, the config file, or ./.venvs/models (host.worker.environment.find_worker_environment)."""
        choice = find_worker_environment()
        try:
            command = cls.parse(choice.spec)
        except EnvironmentProblem as exc:
            raise EnvironmentProblem(f"{choice.source}: {exc}") from None
        command.worker_code, command.origin = choice.worker_code, choice.source
        return command

    def argv(self, worker_args: Sequence[str]) -> list[str]:
        return [*self.interpreter(), "-u", "-m", self.module, *worker_args]

    def interpreter(self) -> list[str]:
        """The prefix, its program made absolute: the worker starts in another directory."""
        program, *rest = self.prefix
        return [os.path.abspath(program) if os.sep in program else program, *rest]

    def environment(self) -> dict[str, str]:
        """Never the host's own Python paths: see host.worker.environment for the isolation rule."""
        return worker_process_environment(self.env, self._code_mode())

    def start_directory(self) -> str:
        """The worker's working directory: never the application's (host.worker.environment)."""
        return str(worker_start_directory(self._code_mode()))

    def _code_mode(self) -> str | None:
        return self.worker_code if self.add_project_to_path else WORKER_CODE_INSTALLED


class WorkerProcess:
    """One running worker: its pipes, its stderr buffer and its exit."""

    def __init__(
        self,
        command: WorkerCommand,
        worker_args: Sequence[str] = (),
        *,
        stderr_lines: int = STDERR_LINES_KEPT,
        on_stderr: Callable[[str], None] | None = None,
    ) -> None:
        self.command = command
        self.worker_args = list(worker_args)
        self._stderr: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._stderr_lock = threading.Lock()
        self._on_stderr = on_stderr
        self.kill_reason: str | None = None
        """Why the host killed this worker, when it did (shown in the crash error)."""
        argv = command.argv(self.worker_args)
        executable = argv[0]
        if os.sep not in executable and shutil.which(executable) is None:
            raise FileNotFoundError(f"worker interpreter {executable!r} (from {command.origin}) not found on PATH")
        if os.sep in executable and not os.path.exists(executable):
            raise FileNotFoundError(f"worker interpreter {executable} (from {command.origin}) does not exist")
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=1024 * 1024,
            env=command.environment(),
            cwd=command.start_directory(),
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
        """Reads stderr until EOF, whatever arrives: lines are bounded, a failing callback is dropped."""
        stream = self.popen.stderr
        assert stream is not None
        limit = STDERR_LINE_CHARS * 4  # bytes: a UTF-8 character takes at most four
        while True:
            raw = stream.readline(limit)
            if not raw:
                break
            skipped = 0
            while not raw.endswith(b"\n"):  # an endless line: keep its start, count the rest
                more = stream.readline(limit)
                if not more:
                    break
                skipped += len(more) - more.endswith(b"\n")
                if more.endswith(b"\n"):
                    break
            line = _bounded_line(raw.decode("utf-8", "replace").rstrip("\n"), skipped)
            with self._stderr_lock:
                self._stderr.append(line)
            if self._on_stderr is not None:
                try:
                    self._on_stderr(line)
                except Exception:  # the drain must never die: a full pipe would block the worker
                    log.exception("the on_stderr callback raised; it is not called again for worker %d", self.pid)
                    self._on_stderr = None
        stream.close()

    def stderr_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines, at most STDERR_TAIL_CHARS characters (the newest kept)."""
        with self._stderr_lock:
            text = "\n".join(list(self._stderr)[-lines:])
        return text if len(text) <= STDERR_TAIL_CHARS else "[...] " + text[-STDERR_TAIL_CHARS:]

    def wait_exit(self, timeout: float | None) -> int | None:
        """Waits for the exit and for stderr to be drained, so a crash report carries the last lines."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._drain.join(timeout=DRAIN_JOIN_S)
        return code

    def stop(self, timeout: float = STDIN_CLOSE_WAIT_S) -> int | None:
        """Closes stdin (the worker exits at EOF), then terminates, then kills. Returns the exit code.

        Nothing writes to stdin through its buffer (the session writes the descriptor directly), so closing
        it never blocks, even when the worker has stopped reading."""
        with contextlib.suppress(OSError):
            self.stdin.close()
        code = self.wait_exit(timeout)
        if code is None:
            self.signal(signal.SIGTERM)
            code = self.wait_exit(TERMINATE_WAIT_S)
        if code is None:
            self.kill()
            code = self.wait_exit(KILL_WAIT_S)
        self.stdout.close()
        return code

    def signal(self, signum: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signum)

    def kill(self, reason: str | None = None) -> None:
        if reason is not None and self.alive:
            self.kill_reason = reason
        self.signal(signal.SIGKILL)


def _bounded_line(line: str, skipped_bytes: int) -> str:
    if len(line) <= STDERR_LINE_CHARS and not skipped_bytes:
        return line
    return f"{line[:STDERR_LINE_CHARS]}... [line cut: {len(line) - STDERR_LINE_CHARS + skipped_bytes} more]"
