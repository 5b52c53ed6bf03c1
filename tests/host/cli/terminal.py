"""A program on a real pseudo-terminal, driven like a person at a keyboard (stdlib pty; no pexpect).

The child is a session leader with the pty as its controlling terminal, so writing ``\\x03`` makes the
terminal driver send SIGINT to the foreground process group, exactly as pressing Ctrl-C does.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import time
from collections.abc import Mapping, Sequence


class TerminalProgram:
    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str) -> None:
        pid, fd = pty.fork()
        if pid == 0:
            try:
                # As at a person's terminal: Ctrl-C interrupts, even when this test runs as a background job,
                # whose shell started it with SIGINT ignored (a disposition exec would pass on).
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.chdir(cwd)
                os.execve(argv[0], list(argv), dict(env))
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = ""
        self.position = 0
        self.exit_code: int | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            return False
        if not data:
            return False
        self.output += data.decode("utf-8", "replace")
        return True

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Waits for ``pattern`` (a regex) in the output after the previous match; fails with the output so far."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output, self.position)
            if match:
                self.position = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.1)):
                match = regex.search(self.output, self.position)
                if match:
                    self.position = match.end()
                    return match
                raise AssertionError(f"{pattern!r} not seen within {timeout} s; output so far:\n{self.output}")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def line(self, text: str) -> None:
        self.send(text + "\r")

    def ctrl_c_at_prompt(self, pattern: str, tries: int = 4, patience: float = 5.0) -> re.Match[str]:
        """Presses Ctrl-C at a readline prompt until ``pattern`` shows.

        CPython's readline loses a SIGINT that lands after the prompt is printed but before it blocks in
        select(): the flag is set, nobody looks at it until the next key. On a loaded machine that window
        is real (about one press in ten with both cores busy); a person would press again, and so does this.
        """
        for attempt in range(1, tries + 1):
            self.send("\x03")
            try:
                return self.expect(pattern, patience)
            except AssertionError:
                if attempt == tries:
                    raise
        raise AssertionError("tries must be at least 1")

    def wait(self, timeout: float = 60.0) -> int:
        """Reads until the program exits and returns its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.05) and select.select([self.fd], [], [], 0)[0]:
                    pass
                self.exit_code = os.waitstatus_to_exitcode(status)
                return self.exit_code
        raise AssertionError(f"the program did not exit within {timeout} s; output:\n{self.output}")

    def close(self) -> None:
        if self.exit_code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


def screen_text(raw: str) -> str:
    """What a terminal shows: carriage-return rewrites collapsed to each line's last state."""
    lines = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        lines.append(line.split("\r")[-1].rstrip() if "\r" in line else line.rstrip())
    return "\n".join(lines)


def terminal_lines(raw: str) -> list[str]:
    """What a terminal shows, character by character: text overwrites at the cursor, ``\r`` goes back to the
    line's start and ``\n`` down a line, so the leftovers of a longer line stay visible as on a real screen."""
    lines: list[list[str]] = [[]]
    row = column = 0
    for char in raw:
        if char == "\r":
            column = 0
        elif char == "\n":
            row, column = row + 1, 0
            if row == len(lines):
                lines.append([])
        else:
            line = lines[row]
            if column < len(line):
                line[column] = char
            else:
                line.append(char)
            column += 1
    return ["".join(line).rstrip() for line in lines]
