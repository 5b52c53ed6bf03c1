"""One object of the web face: what the person dropped, where its files go, and how far it has got.

The thread that runs an object writes its record and the page reads it at every refresh, from other threads: every
read is a snapshot (``ObjectView``) taken under the object's lock. Cancelling is the one thing the page does to an
object: it sets a flag the runner checks between requests and cancels the request in flight on the worker.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rpcworker.wire.messages import MESH_FORMATS, MeshFormat, ProgressParams

from ..api.naming import name_max, temporary_name
from ..api.options import ViewOptions

if TYPE_CHECKING:
    from ..worker.session import PendingCall

VIEWER_FORMAT: MeshFormat = "glb"
"""The mesh the page's 3D view shows (gr.Model3D reads GLB with its vertex colours); always made, first."""
ACTIVE_STATES = ("queued", "preparing", "views", "mesh")
FINAL_STATES = ("done", "failed", "cancelled")


class ObjectCancelled(Exception):
    """The person cancelled the object: raised between its requests, so nothing more is sent for it."""


@dataclass(frozen=True)
class ObjectFiles:
    """Where one object's files go: ``NAME_input.png`` (the prepared input, under a hidden name until the meshes
    exist), ``NAME_views.png`` and ``NAME.FORMAT`` for each format, GLB first."""

    prepared: Path
    staged: Path
    grid: Path
    meshes: dict[str, Path]

    @classmethod
    def of(cls, out_dir: Path, name: str, formats: Sequence[str]) -> ObjectFiles:
        prepared = out_dir / f"{name}_input.png"
        return cls(
            prepared,
            prepared.with_name(temporary_name(prepared.name, name_max(out_dir))),
            out_dir / f"{name}_views.png",
            {fmt: out_dir / f"{name}.{fmt}" for fmt in formats},
        )

    def every(self) -> list[Path]:
        return [self.prepared, self.staged, self.grid, *self.meshes.values()]

    def discard(self) -> None:
        """Removes whatever the object wrote: a cancelled or failed object leaves nothing behind. Every path is this
        object's alone (``NameBook``) and the worker never overwrites, so nothing here belongs to anyone else."""
        for path in self.every():
            path.unlink(missing_ok=True)


class NameBook:
    """Unique object names in one output folder: a name is free when no file of it exists there and no object of
    this server holds it, so two people dropping ``mug.png`` get ``mug`` and ``mug-2``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._taken: set[str] = set()
        self._lock = threading.Lock()

    def reserve(self, stem: str, formats: Sequence[str]) -> tuple[str, ObjectFiles]:
        """A free name for an object making ``formats``; a name is free only when no mesh of any format has it."""
        base = stem or "object"
        with self._lock:
            name, number = base, 2
            while name in self._taken or any(
                p.exists() for p in ObjectFiles.of(self.out_dir, name, MESH_FORMATS).every()
            ):
                name, number = f"{base}-{number}", number + 1
            self._taken.add(name)
        return name, ObjectFiles.of(self.out_dir, name, formats)


@dataclass(frozen=True)
class ObjectView:
    """What the page shows of an object at one moment."""

    id: int
    name: str
    state: str
    """queued, preparing, views, mesh (running), done, failed or cancelled."""
    stage: str = ""
    step: int = 0
    total: int = 0
    shown_input: Path | None = None
    """The prepared input (the upload itself without preparation), once there is one."""
    grid: Path | None = None
    meshes: tuple[tuple[str, Path], ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass
class WebObject:
    """One object's request from a browser and its progress; ``send`` is how its runner talks to the worker."""

    id: int
    name: str
    source: Path
    mask: Path | None
    views: ViewOptions
    formats: tuple[MeshFormat, ...]
    preprocess: bool
    files: ObjectFiles
    _view: ObjectView = field(init=False)
    _call: PendingCall | None = field(default=None, init=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, init=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False)
    """Guards the view and the call; notified at every change of the view."""

    def __post_init__(self) -> None:
        self._view = ObjectView(self.id, self.name, "queued")

    def snapshot(self) -> ObjectView:
        with self._changed:
            return self._view

    def wait_until(self, wanted: Callable[[ObjectView], bool], timeout: float | None = None) -> ObjectView:
        """The view once ``wanted`` holds for it (or the timeout passed): waits on the object's own changes."""
        with self._changed:
            self._changed.wait_for(lambda: wanted(self._view), timeout)
            return self._view

    def _set(self, **changes: Any) -> None:
        """Changes the view; the caller holds the lock."""
        self._view = dataclasses.replace(self._view, **changes)
        self._changed.notify_all()

    def update(self, **changes: Any) -> None:
        """Changes what the page shows (fields of ObjectView); a finished object's record no longer changes."""
        with self._changed:
            if self._view.active:
                self._set(**changes)

    def note(self, line: str) -> None:
        with self._changed:
            if self._view.active:
                self._set(notes=(*self._view.notes, line))

    def on_progress(self, params: ProgressParams) -> None:
        if not self._cancelled.is_set():
            self.update(stage=params.stage, step=params.step, total=params.total)

    def start(self) -> bool:
        """A runner takes the object: False when it was cancelled while it waited (it is then finished already)."""
        with self._changed:
            if self._view.state != "queued":
                return False
            self._set(state="preparing")
            return True

    def complete(self, **changes: Any) -> bool:
        """Marks the object done, unless a cancel came first (its runner then removes the files): after this a
        cancel no longer applies, so a finished object's files never go away under the page."""
        with self._changed:
            if self._cancelled.is_set() or not self._view.active:
                return False
            self._set(state="done", stage="", **changes)
            return True

    def finish(self, state: str, error: str | None = None, shown_input: Path | None = None) -> None:
        """Ends the object as cancelled or failed, its files gone: the card shows the upload, not the prepared input."""
        with self._changed:
            if self._view.active:
                self._set(state=state, stage="", error=error, shown_input=shown_input, grid=None, meshes=())

    def cancel(self) -> bool:
        """Stops the object: one still queued is finished at once; for one running, the request in flight is cancelled
        on the worker (which then writes nothing for it) and no further request is sent. False when it had finished."""
        with self._changed:
            if not self._view.active:
                return False
            self._cancelled.set()
            if self._view.state == "queued":
                self._set(state="cancelled")
                return True
            self._set(stage="cancelling")
            call = self._call
        if call is not None:
            call.cancel()
        return True

    def check(self) -> None:
        """Raises ObjectCancelled once the object is cancelled: its runner calls it between steps."""
        if self._cancelled.is_set():
            raise ObjectCancelled(self.name)

    def send(self, request: Callable[[], PendingCall]) -> Any:
        """Sends one request (``request`` sends it and returns its pending call) and waits for its result; a cancel
        that comes at any moment reaches it: before the send (nothing is sent) or after (the call is cancelled)."""
        self.check()
        call = request()
        with self._changed:
            self._call = call
        if self._cancelled.is_set():  # a cancel between the check and the line above found no call to cancel
            call.cancel()
        try:
            return call.result()
        finally:
            with self._changed:
                self._call = None
