"""The worker's side of the build of the compiled views: the build process, and what status says of it.

`BackgroundBuild` starts `compile_build` as a child process and reads its report on a thread of its own, so
the worker serves requests eagerly meanwhile (the child has its own GIL and its own CUDA context). A child
that ends without saying it is done, killed or crashed, is a failed build, with one line saying how it ended.

`CompileTracker` keeps the state every reader sees (status's ``compile``, the ``compile`` notification):
off, waiting, building, checking, ready or failed, with the packages done of the stage's total and the time.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..wire.messages import CompileState, CompileStatus
from .compile_build import BUILD_MODULE, BuildEvent, BuildSpec

log = logging.getLogger("rpcworker.instantmesh")

STOP_GRACE_S = 5.0
"""How long a stopped build may take to end after SIGTERM before it is killed."""

Listener = Callable[[CompileStatus], None]


class CompileTracker:
    """The compiled views' state, safe to read from any thread; listeners hear every change."""

    def __init__(self, state: CompileState = "off") -> None:
        self._lock = threading.Lock()
        self._status = CompileStatus(state)
        self._started: float | None = None
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [each for each in self._listeners if each is not listener]

    def begin(self) -> None:
        """The build starts now: `seconds` counts from here."""
        with self._lock:
            self._started = time.monotonic()

    def snapshot(self) -> CompileStatus:
        with self._lock:
            return self._current()

    def _current(self) -> CompileStatus:
        status = self._status
        if self._started is not None and status.state not in ("ready", "failed", "off"):
            status = msgspec.structs.replace(status, seconds=round(time.monotonic() - self._started, 3))
        return status

    def update(self, **changes: Any) -> CompileStatus:
        """Changes fields of the status; at ready or failed, `seconds` stops at the build's time."""
        with self._lock:
            if self._started is not None and changes.get("state") in ("ready", "failed"):
                changes.setdefault("seconds", round(time.monotonic() - self._started, 3))
            self._status = msgspec.structs.replace(self._status, **changes)
            status, listeners = self._current(), list(self._listeners)
        for listener in listeners:
            try:
                listener(status)
            except Exception:  # a listener (the notification's send) must not end the build's reporting
                log.exception("a compile status listener failed")
        return status


class BackgroundBuild:
    """`compile_build` in a child process; each `BuildEvent` it reports goes to `on_event` (on the reading
    thread), and a child that ends without ``done`` or ``failed`` becomes a ``failed`` event."""

    def __init__(self, spec: BuildSpec, on_event: Callable[[BuildEvent], None]) -> None:
        self.spec = spec
        self.on_event = on_event
        self.process: subprocess.Popen[bytes] | None = None
        self.ended = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", BUILD_MODULE, msgspec.json.encode(self.spec).decode()]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, name="compile-build-report", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        decoder = msgspec.json.Decoder(BuildEvent)
        finished = False
        try:
            for line in self.process.stdout:
                try:
                    event = decoder.decode(line)
                except msgspec.DecodeError:
                    log.warning("the compile build reported a line that is no event: %r", line[:200])
                    continue
                finished = finished or event.event in ("done", "failed")
                self.on_event(event)
            code = self.process.wait()
            if not finished:
                self.on_event(BuildEvent("failed", message=f"the build process {ended_how(code)} before it finished"))
        finally:
            self.ended.set()

    def stop(self) -> None:
        """Ends the child (the packages it finished stay in the cache)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ended_how(code: int) -> str:
    """``was killed by SIGKILL`` or ``exited with code 1``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
