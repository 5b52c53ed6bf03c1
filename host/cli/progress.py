"""Plain-text progress for the worker's progress notifications, usable in any terminal or log file.

On a TTY one line per stage is redrawn with carriage returns (no ANSI codes, so a dumb terminal works);
elsewhere (pipes, CI logs) each stage prints one line when it starts, so logs stay short.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from rpcworker.wire.messages import ProgressParams

STAGE_LABELS = {"load": "load", "diffusion": "views", "reconstruct": "mesh"}


class ProgressPrinter:
    """Callable as an ``on_progress`` callback; called from the session's reader thread."""

    def __init__(
        self, stream: TextIO | None = None, *, tty: bool | None = None, width: int = 30, indent: str = "  "
    ) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.indent = indent
        self._lock = threading.Lock()
        self._stage: tuple[object, str] | None = None
        self._stage_started = 0.0
        self._last_draw = 0.0
        self._line_len = 0
        self._open_line = False
        self._closed: set[object] = set()

    def __call__(self, progress: ProgressParams) -> None:
        with self._lock:
            if progress.id in self._closed:
                return
            key = (progress.id, progress.stage)
            now = time.monotonic()
            if key != self._stage:
                self._end_line_locked()
                self._stage, self._stage_started, self._last_draw = key, now, 0.0
                if not self.tty:
                    self._write(f"{self.indent}{_stage_line(progress)}\n")
                    return
            if not self.tty:
                return
            if progress.step < progress.total and now - self._last_draw < 0.05:
                return
            self._last_draw = now
            self._draw(progress, now - self._stage_started)

    def _draw(self, progress: ProgressParams, elapsed: float) -> None:
        label = STAGE_LABELS.get(progress.stage, progress.stage)
        total = max(progress.total, 1)
        filled = min(self.width, round(self.width * progress.step / total))
        bar = "#" * filled + "." * (self.width - filled)
        message = f" {progress.message}" if progress.message else ""
        text = f"{self.indent}{label:<6}[{bar}] {progress.step}/{progress.total}{message} {elapsed:6.1f} s"
        padding = " " * max(0, self._line_len - len(text))
        self._write("\r" + text + padding)
        self._line_len = len(text)
        self._open_line = True

    def end_line(self) -> None:
        """Finishes the current request's bar; its late notifications (after a cancel) are dropped."""
        with self._lock:
            self._end_line_locked()
            if self._stage is not None:
                if len(self._closed) > 10_000:
                    self._closed.clear()
                self._closed.add(self._stage[0])
            self._stage = None

    def _end_line_locked(self) -> None:
        if self._open_line:
            self._write("\n")
        self._open_line = False
        self._line_len = 0

    def print(self, text: str) -> None:
        """A line of ordinary output that never lands in the middle of a progress bar."""
        with self._lock:
            self._end_line_locked()
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _stage_line(progress: ProgressParams) -> str:
    """The one line a stage gets when the output is not a terminal."""
    if progress.stage == "diffusion":
        return f"views: {progress.total} diffusion steps ..."
    if progress.stage == "reconstruct":
        return "mesh: reconstructing ..."
    if progress.stage == "load":
        return f"load: loading {progress.total} model(s) ..."
    return f"{progress.stage}: {progress.step}/{progress.total} {progress.message}".rstrip()
