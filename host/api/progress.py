"""Plain-text progress for the worker's progress notifications, usable in any terminal or log file.

On a TTY one line per stage is redrawn with carriage returns (no ANSI codes, so a dumb terminal works);
elsewhere (pipes, CI logs) each stage prints one line when it starts, so logs stay short. A status line (a
map's objects done, in flight, rate and time left) may sit below the ordinary lines, on a stream of its
own: redrawn in place on a TTY, a line per update elsewhere. The API (``progress=True``) and the CLI both
draw through this one printer.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO, TypeVar

from rpcworker.wire.messages import ProgressParams

from ..worker.session import ProgressCallback
from .tally import ObjectTally

T = TypeVar("T")

STAGE_LABELS = {"load": "load", "diffusion": "views", "reconstruct": "mesh"}


class ProgressPrinter:
    """Callable as an ``on_progress`` callback; called from the session's reader thread."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        width: int = 30,
        indent: str = "  ",
        status_stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.status_stream = status_stream or self.stream
        self.status_tty = self.status_stream.isatty() if status_stream is not None else self.tty
        self._status = ""
        """The status line now drawn at the bottom of a TTY ("" when none)."""
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
        """A line of ordinary output that never lands in the middle of a progress bar or the status line."""
        with self._lock:
            shown = self._status
            self._clear_status_locked()
            self._end_line_locked()
            self._write(text + "\n")
            self._draw_status_locked(shown)

    def status(self, text: str) -> None:
        """Shows ``text`` as the status line: redrawn in place on a TTY, else written as a line of its own."""
        with self._lock:
            if not self.status_tty:
                self._write_status(text + "\n")
                return
            self._draw_status_locked(text)

    def end_status(self) -> None:
        """Leaves the last status line on screen and ends it, so later output starts on a line of its own."""
        with self._lock:
            if self._status:
                self._write_status("\n")
            self._status = ""

    def _draw_status_locked(self, text: str) -> None:
        if text:
            padding = " " * max(0, len(self._status) - len(text))
            self._write_status("\r" + text + padding)
        self._status = text

    def _clear_status_locked(self) -> None:
        if self._status:
            self._write_status("\r" + " " * len(self._status) + "\r")
            self._status = ""

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _write_status(self, text: str) -> None:
        self.status_stream.write(text)
        self.status_stream.flush()


def _stage_line(progress: ProgressParams) -> str:
    """The one line a stage gets when the output is not a terminal."""
    if progress.stage == "diffusion":
        return f"views: {progress.total} diffusion steps ..."
    if progress.stage == "reconstruct":
        return "mesh: reconstructing ..."
    if progress.stage == "load":
        return f"load: loading {progress.total} model(s) ..."
    return f"{progress.stage}: {progress.step}/{progress.total} {progress.message}".rstrip()


class WorkerProgress:
    """What a worker shows of its work on stderr when ``progress`` is on: each request's stages as bars, and a
    map's objects as one line (done, in flight, per minute, time left). Off, it only passes callbacks on."""

    def __init__(self, enabled: bool) -> None:
        self.printer = ProgressPrinter(sys.stderr) if enabled else None

    @contextmanager
    def request(self, callback: ProgressCallback | None) -> Iterator[ProgressCallback | None]:
        """The progress callback of one request: ``callback`` and the bars; the bar ends with the block."""
        printer = self.printer
        if printer is None:
            yield callback
            return
        try:
            yield printer if callback is None else _both(callback, printer)
        finally:
            printer.end_line()

    def objects(self, total: int) -> ObjectTally | None:
        """A tally of ``total`` objects whose line is redrawn as each ends (None when progress is off)."""
        printer = self.printer
        return None if printer is None else ObjectTally(total, lambda tally: printer.status(tally.line()))

    def ending(self, outcomes: Iterator[T]) -> Iterator[T]:
        """``outcomes``, the objects' line ended with them however the loop over them ends."""
        if self.printer is None:
            return outcomes
        return _ending_status(outcomes, self.printer)


def _both(first: ProgressCallback, second: ProgressCallback) -> ProgressCallback:
    def both(progress: ProgressParams) -> None:
        first(progress)
        second(progress)

    return both


def _ending_status(outcomes: Iterator[T], printer: ProgressPrinter) -> Iterator[T]:
    try:
        yield from outcomes
    finally:
        printer.end_status()
